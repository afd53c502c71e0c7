"""How many LLM calls per second one tier worker process sustains, against baselines.

``python -m bench.concurrency [--calls N] [--concurrency 200,500] [--latency 1.0]`` starts one
provider simulator at a fixed latency and, for each concurrency c, measures in separate processes:

* ``bare-asyncio``: N ``litellm.acompletion`` calls on one asyncio loop, c at a time (the ceiling);
* ``chordal-tier-worker``: one ``chordal worker --tier fast --concurrency c`` fed N agent tasks
  straight on ``tier.fast`` (no router);
* ``naive-<pool>``: one Celery worker (threads, or gevent when installed) at concurrency c whose
  task calls sync ``litellm.completion``.

Every figure is compared with the bare-asyncio run of the same invocation, never with a constant.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from bench.celery_load import Batch, BatchResult, run_batch, wait_consuming
from bench.procs import BenchError, Child, Children, child_env, last_json_line
from bench.report import BARE, Row, machine, machine_line, markdown_table, set_ratios, write_json
from bench.simulator import start_simulator
from chordal.broker import EmbeddedBroker, free_port
from chordal.simulator.admin import SimulatorAdmin

REFERENCE_NOTE = (
    "for comparison only, PITFALLS.md (another run, 1 s latency): gevent c=500 sync completion "
    "36 calls/s; threads c=200 66 calls/s; bare acompletion loop 168-207 calls/s"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.concurrency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=1000, help="calls per scenario")
    parser.add_argument("--concurrency", default="200,500", help="comma-separated levels")
    parser.add_argument("--latency", type=float, default=1.0, help="provider latency, seconds")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive Celery pools")
    parser.add_argument("--naive-pools", default="threads,gevent", help="naive pools to measure")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before each run")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(part) for part in args.concurrency.split(",") if part.strip()]
    except ValueError:
        parser.error("--concurrency takes comma-separated integers, e.g. 200,500")
    if args.calls < 1 or not args.levels or min(args.levels) < 1 or args.latency < 0:
        parser.error("--calls and every concurrency must be >= 1, --latency >= 0")
    args.pools = [] if args.skip_naive else [p.strip() for p in args.naive_pools.split(",") if p]
    return args


@dataclass
class Bench:
    """One benchmark run: its temp dir, its children and the shared simulator and broker."""

    calls: int
    latency: float
    warmup: int
    workdir: Path
    children: Children = field(init=False)
    sim: SimulatorAdmin | None = None
    sim_process: Child | None = None
    broker: EmbeddedBroker | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.children = Children(self.workdir / "logs")

    failed: int = 0
    _sim_before: float | None = None
    _sim_after: float | None = None

    @property
    def timeout(self) -> float:
        """Per-scenario limit (about 4 calls/s): only there to end a hopeless run."""
        return 120.0 + self.calls * 0.25

    @property
    def stall_s(self) -> float:
        """Give a Celery scenario up after this long without a single new result."""
        return max(30.0, 10 * self.latency)

    def start(self) -> None:
        """Start the simulator and the embedded Valkey broker."""
        progress(f"starting simulator (latency {self.latency} s, sigma 0)")
        self.sim, self.sim_process = start_simulator(
            self.children, self.workdir, free_port(), self.latency
        )
        progress("starting embedded Valkey")
        self.broker = EmbeddedBroker(self.workdir).start()

    def stop(self) -> None:
        """Stop every subprocess and the broker."""
        self.children.stop_all()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    @property
    def admin(self) -> SimulatorAdmin:
        """The running simulator."""
        if self.sim is None:
            raise BenchError("simulator not started")
        return self.sim

    @property
    def broker_url(self) -> str:
        """The running broker's URL."""
        if self.broker is None:
            raise BenchError("broker not started")
        return self.broker.url

    def bare(self, concurrency: int) -> Row:
        """Baseline A, in its own process so it does not share this one's CPU time."""
        args = ["-m", "bench.bare", "--sim", self.admin.root, "--calls", str(self.calls)]
        args += ["--concurrency", str(concurrency), "--warmup", str(self.warmup)]
        sim_before = self._sim_cpu_s()
        child = self.children.spawn(f"bare-c{concurrency}", args, child_env())
        try:
            child.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"bench.bare still running after {self.timeout} s") from exc
        finally:
            self.children.stop(child)
        if child.process.returncode != 0:
            raise BenchError(f"bench.bare exited with {child.process.returncode}:\n{child.tail()}")
        result = last_json_line(child)
        # The simulator served the warm-up calls too while the bare process ran.
        return Row(
            scenario=BARE, concurrency=concurrency, calls=self.calls, ok=result["ok"],
            errors=result["errors"], wall_s=result["wall_s"],
            peak_in_flight=result["peak_in_flight"], cpu_s=result["cpu_s"],
            sim_cpu_ms_per_call=_per_call(sim_before, self._sim_cpu_s(),
                                          self.calls + self.warmup),
        )  # fmt: skip

    def chordal(self, concurrency: int, processes: int = 1) -> Row:
        """One Chordal fast-tier worker fed agent tasks directly on its queue: one process, or
        ``processes`` sharing ``concurrency`` between them (``--processes``)."""
        from agents.job import Job
        from agents.run import Runtime, plan
        from workers.app import create_app
        from workers.settings import Settings
        from workers.tiers import AGENT_TASK, Tier, transport_priority

        sim_v1 = f"{self.admin.root}/v1"
        settings = Settings(
            broker_url=self.broker_url, result_backend=None, profile="offline",
            simulator_url=sim_v1, data_dir=self.workdir / "chordal",
        )  # fmt: skip
        # Routing once here, as the router would, keeps the router out of the measurement.
        job = Job(agent="summarizer", input="Benchmark input.", tier=Tier.FAST)
        decision = plan(job, Runtime.load(settings)).model_dump(mode="json")
        job_dict = job.model_dump(mode="json")
        batch = Batch(
            task=AGENT_TASK,
            queue=Tier.FAST.queue,
            args=lambda n: [{**job_dict, "input": f"Benchmark input {n}."}, decision],
            kwargs={"failed": []},
            priority=transport_priority(job.priority, broker_url=self.broker_url),
        )
        env = child_env(
            CHORDAL_BROKER_URL=self.broker_url, CHORDAL_SIMULATOR_URL=sim_v1,
            CHORDAL_PROFILE="offline", CHORDAL_DATA_DIR=str(settings.data_dir),
        )  # fmt: skip
        command = ["-m", "chordal.cli", "worker", "--tier", "fast", "--processes", str(processes)]
        command += ["--concurrency", str(max(1, concurrency // processes))]
        command += ["--loglevel", "WARNING"]
        scenario = "chordal-tier-worker" + (f"-p{processes}" if processes > 1 else "")
        app = create_app(settings)
        try:
            worker = self.children.spawn(f"{scenario}-c{concurrency}", command, env)
            result, cpu_s = self._measure_worker(app, batch, worker)
        finally:
            app.close()
        return self._row(scenario, concurrency, result, cpu_s)

    def naive(self, pool: str, concurrency: int) -> Row:
        """Baseline B: a Celery worker on ``pool`` whose task blocks in sync litellm.completion."""
        from bench import naive_tasks
        from bench.noop_tasks import BROKER_ENV

        # gevent's monkey patching touches Celery's default app before ``-A`` is read, and that
        # app's loader imports ``celeryconfig`` -- Chordal's, which refuses to load without a
        # CHORDAL_BROKER_URL. Pointing the loader at this inert package keeps the baseline plain.
        env = child_env(CELERY_CONFIG_MODULE="bench", **{BROKER_ENV: self.broker_url})
        command = ["-m", "celery", "-A", "bench.naive_tasks", "worker", "-P", pool]
        command += ["-c", str(concurrency), "-Q", naive_tasks.QUEUE, "--prefetch-multiplier", "1"]
        command += ["-n", f"naive-{pool}-c{concurrency}@%h", "-l", "WARNING"]
        command += ["--without-mingle", "--without-gossip"]
        api_base = f"{self.admin.root}/v1"
        batch = Batch(
            task=naive_tasks.TASK,
            queue=naive_tasks.QUEUE,
            args=lambda n: [api_base, f"Summarise benchmark call {n}."],
            kwargs={},
        )
        app = naive_tasks.create_app(self.broker_url)
        try:
            worker = self.children.spawn(f"naive-{pool}-c{concurrency}", command, env)
            result, cpu_s = self._measure_worker(app, batch, worker)
        finally:
            app.close()
        return self._row(f"naive-{pool}", concurrency, result, cpu_s)

    def _measure_worker(
        self, app: Any, batch: Batch, worker: Child
    ) -> tuple[BatchResult, float | None]:
        """Warm the worker up, then time the batch; also returns the worker's CPU seconds."""
        timed = partial(run_batch, worker=worker, timeout=self.timeout, stall_s=self.stall_s)
        try:
            wait_consuming(app, batch.queue, worker)
            if self.warmup:
                timed(app, batch, self.warmup)
            self.admin.reset_stats()
            cpu_before, self._sim_before = worker.cpu_s(), self._sim_cpu_s()
            result = timed(app, batch, self.calls)
            cpu_after, self._sim_after = worker.cpu_s(), self._sim_cpu_s()
        finally:
            # Stopped before the next scenario starts, so it never competes for the CPU.
            self.children.stop(worker)
        if cpu_before is None or cpu_after is None:
            return result, None
        return result, cpu_after - cpu_before

    def _row(
        self, scenario: str, concurrency: int, result: BatchResult, cpu_s: float | None
    ) -> Row:
        return Row(
            scenario=scenario, concurrency=concurrency, calls=self.calls, ok=result.ok,
            errors=result.errors, wall_s=result.wall_s, cpu_s=cpu_s,
            peak_in_flight=self.admin.peak_in_flight(), first_error=result.first_error,
            sim_cpu_ms_per_call=_per_call(self._sim_before, self._sim_after, self.calls),
        )  # fmt: skip

    def _sim_cpu_s(self) -> float | None:
        return self.sim_process.cpu_s() if self.sim_process is not None else None


def _per_call(before: float | None, after: float | None, calls: int) -> float | None:
    if before is None or after is None or calls < 1:
        return None
    return (after - before) * 1000 / calls


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the report)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _usable_pools(pools: list[str], notes: list[str]) -> list[str]:
    usable = []
    for pool in pools:
        if pool == "gevent" and importlib.util.find_spec("gevent") is None:
            notes.append("gevent is not installed: naive-gevent skipped (see the reference line)")
        elif pool not in {"threads", "gevent"}:
            notes.append(f"unknown naive pool {pool!r} skipped (threads or gevent)")
        else:
            usable.append(pool)
    return usable


def run(args: argparse.Namespace, bench: Bench, rows: list[Row]) -> None:
    """Every scenario at every concurrency level, appending to ``rows`` as they finish."""
    pools = _usable_pools(args.pools, bench.notes)
    bench.start()
    for level in args.levels:
        scenarios: list[tuple[str, Callable[[int], Row]]] = [
            (BARE, bench.bare),
            ("chordal-tier-worker", bench.chordal),
        ]
        scenarios += [(f"naive-{pool}", partial(bench.naive, pool)) for pool in pools]
        for name, scenario in scenarios:
            progress(f"{name} at concurrency {level}: {args.calls} calls")
            try:
                row = scenario(level)
            except BenchError as exc:
                # One broken scenario (a baseline falling over is a finding) must not cost the
                # others; it is listed in the notes and the exit code.
                progress(f"  FAILED: {exc}")
                bench.notes.append(
                    f"{name} c={level} FAILED: {str(exc).splitlines()[0].rstrip(':')}"
                )
                bench.failed += 1
                continue
            progress(f"  {row.calls_per_s:.1f} calls/s, peak in flight {row.peak_in_flight}")
            rows.append(row)


def _raise_exit(signum: int, _frame: Any) -> NoReturn:
    # SystemExit unwinds through the finally blocks that stop every subprocess.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table; returns the exit code."""
    args = parse_args(argv)
    # LiteLLM, imported here to route once, would otherwise try to download its price map.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    signal.signal(signal.SIGTERM, _raise_exit)
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="chordal-bench-"))
    bench = Bench(calls=args.calls, latency=args.latency, warmup=args.warmup, workdir=workdir)
    rows: list[Row] = []
    code = 0
    try:
        run(args, bench, rows)
    except BenchError as exc:
        progress(f"error: {exc}")
        code = 1
    except KeyboardInterrupt:
        progress("interrupted")
        code = 130
    except SystemExit as exc:  # SIGTERM, see _raise_exit: still report what was measured
        progress("terminated")
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    _report(args, rows, info, bench.notes)
    return code or (1 if bench.failed else 0)


def _report(
    args: argparse.Namespace, rows: list[Row], info: dict[str, Any], notes: list[str]
) -> None:
    set_ratios(rows)
    notes = [*notes, REFERENCE_NOTE]
    notes += [f"{r.scenario} c={r.concurrency}: {r.errors} failed, first: {r.first_error}"
              for r in rows if r.errors]  # fmt: skip
    print(machine_line(info))
    print(f"provider latency {args.latency} s (sigma 0), {args.calls} calls per scenario\n")
    print(markdown_table(rows))
    for note in notes:
        print(f"\n- {note}", end="")
    print()
    if args.json:
        params = {"calls": args.calls, "concurrency": args.levels, "latency_s": args.latency,
                  "warmup": args.warmup, "naive_pools": args.pools}  # fmt: skip
        write_json(args.json, rows=rows, info=info, params=params, notes=notes)


if __name__ == "__main__":
    sys.exit(main())
