"""Every benchmark of issue #6 in one invocation: ``python -m bench.suite`` (or ``chordal bench``).

Rows, each compared with a baseline measured in the same run:

a. raw Celery no-op round trip and throughput on the stack's broker -- the floor;
b. a Chordal job through router and tier worker, zero-latency simulator, against (a);
c. tier worker calls/s at 1 s latency and concurrency 100/500/1000 against a bare asyncio
   LiteLLM loop and naive Celery workers (``bench.concurrency``'s scenarios);
d. team fan-out of 10/100/500 members: slowest member's end to the aggregator's start;
e. producer import time and submit latency, tier worker cold start, signed messages' CPU;
f. the router's decision time (``bench.router``);
g. tier worker memory per in-flight call.

Prints one markdown report on stdout (progress on stderr); ``--json`` and ``--plot`` (calls/s
against concurrency for row c) write files. ``--smoke`` runs everything at a tiny size to show
it works; its figures mean nothing. Exit code 1 when a part failed (missed targets do not fail).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bench import fanout, memory, roundtrip, signing, startup
from bench.concurrency import Bench, progress
from bench.floor import JobCall, add_ceiling, bare_call, explain_job
from bench.procs import Children
from bench.report import Row, machine, machine_line
from bench.router import FULL as ROUTER_FULL
from bench.router import QUICK as ROUTER_QUICK
from bench.router import STRATEGIES, TARGET_MODELS, TARGET_US, Budget
from bench.scaling import Plan, run_scaling, target_level
from bench.suite_report import ROWS, Part, render, write_json
from bench.tier_env import TierEnv

if TYPE_CHECKING:
    from chordal.stack import LocalStack
    from workers.settings import Settings

STACK_ROWS = frozenset("bde")


@dataclass(frozen=True)
class Sizes:
    """How much each part measures."""

    import_repeats: int
    roundtrip: roundtrip.Sizes
    fanout: tuple[int, ...]
    submit_samples: int
    memory_calls: int
    memory_hold_s: float
    memory_baseline: bool
    scaling: Plan
    router_sizes: tuple[int, ...]
    router_budgets: tuple[Budget, Budget]
    router_strategies: tuple[str, ...]
    stack_tiers: tuple[str, ...] = ("fast", "balanced", "premium")


FULL = Sizes(
    import_repeats=5,
    roundtrip=roundtrip.Sizes(samples=150, batch=300, warmup=10),
    fanout=(10, 100, 500),
    submit_samples=200,
    memory_calls=500,
    memory_hold_s=120.0,
    memory_baseline=True,
    scaling=Plan(
        levels=(100, 500, 1000),
        calls=400,
        max_calls=1000,
        latency_s=1.0,
        pools=("threads", "gevent"),
        naive_levels=(500,),
        processes_levels=(500,),
    ),
    router_sizes=(100,),
    router_budgets=ROUTER_FULL,
    router_strategies=STRATEGIES,
)
SMOKE = Sizes(
    import_repeats=1,
    roundtrip=roundtrip.Sizes(samples=10, batch=20, warmup=2),
    fanout=(5,),
    submit_samples=10,
    memory_calls=10,
    memory_hold_s=60.0,
    memory_baseline=False,
    scaling=Plan(
        levels=(5,),
        calls=10,
        max_calls=10,
        latency_s=0.05,
        pools=(),
        naive_levels=(),
        naive_calls=10,
        warmup=2,
        processes_levels=(5,),
    ),
    router_sizes=(10,),
    router_budgets=ROUTER_QUICK,
    router_strategies=STRATEGIES[:1],
    # Every job of the smoke run routes to the fast tier (the summarizer's); two workers fewer
    # to start keeps it under a minute.
    stack_tiers=("fast",),
)


@dataclass
class Run:
    """One suite invocation: its sizes, temp dir, parts measured and failures."""

    sizes: Sizes
    only: frozenset[str]
    workdir: Path
    parts: dict[str, Part] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    scaling_rows: list[Row] = field(default_factory=list)
    floor: roundtrip.Timings | None = None
    job_call: JobCall | None = None

    def wants(self, row: str) -> bool:
        """Whether row ``row`` is to be measured."""
        return row in self.only

    def attempt(self, label: str, step: Callable[[], Any]) -> None:
        """Run ``step``; a failure is reported and recorded, and the suite goes on."""
        progress(label)
        try:
            step()
        except Exception as exc:  # one broken part must not cost the others
            progress(f"FAILED {label}: {exc!r}")
            traceback.print_exc(file=sys.stderr)
            self.failures.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0]}")

    def part(self, row: str, title: str) -> Part:
        """The part of ``row``, created on first use (row e is filled in three stages)."""
        return self.parts.setdefault(row, Part(row, title))


def stack_settings(workdir: Path) -> Settings:
    """Settings for a private stack: its own Valkey, simulator at zero latency, the team."""
    from workers.settings import Settings

    agents = fanout.write_team(workdir / "agents.yaml")
    # WARNING, as the floor's worker logs: `chordal worker --loglevel` does not override the
    # root level Chordal's logging set-up takes from the settings.
    return Settings(
        broker_url=None, result_backend=None, profile="offline", data_dir=workdir / "stack",
        sim_latency_scale=0.0, tier_concurrency=256, llm_timeout_s=20.0, agents_path=agents,
        flower_port=0, log_level="WARNING",
    )  # fmt: skip


def run_router(run: Run) -> None:
    """Row f via :func:`bench.router.run`."""
    from bench import router

    chordal, litellm = run.sizes.router_budgets
    report = router.run(sizes=run.sizes.router_sizes, chordal=chordal, litellm=litellm,
                        strategies=run.sizes.router_strategies)  # fmt: skip
    part = Part("f", "Router decision time (routing.scoring.choose)")
    size = TARGET_MODELS if TARGET_MODELS in run.sizes.router_sizes else max(run.sizes.router_sizes)
    mine = next(r for r in report.rows if r.implementation == "chordal" and r.models == size)
    shuffle = [r for r in report.rows if r.strategy == "simple-shuffle" and r.models == size]
    p99 = mine.figures()["p99_us"]
    checked = size == TARGET_MODELS
    compared = ""
    if shuffle:
        compared = f"LiteLLM simple-shuffle p99 {shuffle[0].figures()['p99_us']:,.0f} µs"
    part.add(f"decision p99 at {size} models", p99, "µs", compared=compared,
             target=f"≤ {TARGET_US:.0f} µs" if checked else "",
             met=p99 <= TARGET_US if checked else None)  # fmt: skip
    part.table = router.render(report)
    part.details = report.as_json()
    run.parts["f"] = part


def run_stack_rows(run: Run) -> None:
    """Rows a, b, d and e's submit latency, on one local stack (row a alone: a broker)."""
    from chordal.broker import EmbeddedBroker
    from chordal.stack import LocalStack
    from workers.tiers import Tier

    children = Children(run.workdir / "logs")
    if not STACK_ROWS & run.only:
        with EmbeddedBroker(run.workdir) as broker:
            run.attempt("a: raw Celery round trip", lambda: _raw(run, broker.url, children))
        return
    # Never the local tier: it exists only where a local model is configured.
    tiers = [Tier(name) for name in run.sizes.stack_tiers]
    stack = LocalStack(
        stack_settings(run.workdir), tiers=tiers, worker_args=("--loglevel", "WARNING"),
        progress=progress,
    )  # fmt: skip
    try:
        with stack:
            if run.wants("a"):
                url = str(stack.settings.broker_url)
                run.attempt("a: raw Celery round trip", lambda: _raw(run, url, children))
            if run.wants("b"):
                run.attempt("b: Chordal job round trip", lambda: _chordal(run, stack))
                run.attempt("b: one bare LiteLLM call at a time, same simulator",
                            lambda: _bare_call(run, stack, children))  # fmt: skip
            if run.wants("d"):
                run.attempt(
                    f"d: fan-out of {run.sizes.fanout} members", lambda: _fanout(run, stack)
                )
            if run.wants("e"):
                part = run.part("e", startup.TITLE)
                run.attempt("e: submit latency", lambda: startup.submit_latency(
                    part, stack, samples=run.sizes.submit_samples))  # fmt: skip
    finally:
        children.stop_all()


def _raw(run: Run, broker_url: str, children: Children) -> None:
    run.parts["a"], run.floor = roundtrip.raw_celery(broker_url, children, run.sizes.roundtrip)


def _fanout(run: Run, stack: LocalStack) -> None:
    run.parts["d"] = fanout.run_fanout(stack, run.sizes.fanout)


def _chordal(run: Run, stack: LocalStack) -> None:
    run.parts["b"], run.job_call = roundtrip.chordal_job(stack, run.sizes.roundtrip, run.floor)


def _bare_call(run: Run, stack: LocalStack, children: Children) -> None:
    part, call, sizes = run.parts.get("b"), run.job_call, run.sizes.roundtrip
    if part is None or call is None:
        return  # row b failed, already reported: nothing to explain
    bare = bare_call(children, stack.settings, call, calls=sizes.samples, warmup=sizes.warmup)
    pinned = part.details.get("pinned_p50_ms")
    explain_job(part, bare, job_p50_ms=float(part.details["p50_ms"]),
                pinned_p50_ms=None if pinned is None else float(pinned),
                floor_p50_ms=run.floor.p50_ms if run.floor is not None else None)  # fmt: skip


def run_worker_rows(run: Run) -> None:
    """Row e's cold start and row g, on a private simulator and broker (nothing else on
    ``tier.fast``)."""
    workdir = run.workdir / "tier"
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(calls=1, latency=0.0, warmup=0, workdir=workdir)
    env: TierEnv | None = None
    try:
        bench.start()
        env = TierEnv(bench)
        sizes = run.sizes
        concurrency = sizes.memory_calls + 10
        worker = None
        if run.wants("e"):
            part = run.part("e", startup.TITLE)
            progress("e: tier worker cold start")
            worker = startup.cold_start(part, env, concurrency=concurrency)
        if not run.wants("g"):
            return
        progress(f"g: memory with {sizes.memory_calls} calls in flight")
        worker = worker or env.spawn_worker("memory", concurrency=concurrency)
        held = memory.tier_worker_memory(env, worker, calls=sizes.memory_calls,
                                         hold_s=sizes.memory_hold_s)  # fmt: skip
        bare = None
        if sizes.memory_baseline:
            progress("g: bare asyncio baseline")
            bare = memory.bare_memory(env, calls=sizes.memory_calls, hold_s=sizes.memory_hold_s)
        run.parts["g"] = memory.memory_part(held, bare)
    finally:
        if env is not None:
            env.close()
        bench.stop()


def run_scaling_row(run: Run) -> None:
    """Row c via :mod:`bench.scaling`."""
    part, rows = run_scaling(run.workdir / "scaling", run.sizes.scaling)
    run.parts["c"] = part
    run.scaling_rows = rows
    raw = run.floor.cpu[0].batch_ms if run.floor is not None and run.floor.cpu else None
    add_ceiling(part, rows, level=target_level(run.sizes.scaling.levels), celery_ms=raw)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--plot", type=Path, help="PNG of row c: calls/s against concurrency")
    parser.add_argument("--only", default=",".join(ROWS), help="rows to run, e.g. a,b,d")
    args = parser.parse_args(argv)
    args.rows = frozenset(part.strip() for part in args.only.split(",") if part.strip())
    if not args.rows or not args.rows <= set(ROWS):
        parser.error(f"--only takes rows among {','.join(ROWS)}")
    return args


def _raise_exit(signum: int, _frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


def run_suite(
    *, smoke: bool = False, only: Sequence[str] = ROWS, json_path: Path | None = None,
    plot_path: Path | None = None,
) -> int:  # fmt: skip
    """Run the selected rows, print the report, write JSON and plot; returns the exit code."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    signal.signal(signal.SIGTERM, _raise_exit)
    sizes = SMOKE if smoke else FULL
    info = machine()
    run = Run(sizes=sizes, only=frozenset(only), workdir=Path(tempfile.mkdtemp(prefix="suite-")))
    try:
        if run.wants("e"):
            part = run.part("e", startup.TITLE)
            run.attempt("e: producer import time", lambda: startup.import_times(
                part, repeats=sizes.import_repeats))  # fmt: skip
            run.attempt("e: signed messages", lambda: signing.signing_cost(
                part, samples=sizes.submit_samples))  # fmt: skip
        if run.wants("f"):
            run.attempt("f: router decision", lambda: run_router(run))
        if run.only & {"a", *STACK_ROWS}:
            run.attempt("stack rows", lambda: run_stack_rows(run))
        if run.only & {"e", "g"}:
            run.attempt("tier worker rows", lambda: run_worker_rows(run))
        if run.wants("c"):
            run.attempt("c: tier worker throughput", lambda: run_scaling_row(run))
    except KeyboardInterrupt:
        run.failures.append("interrupted")
    except SystemExit:  # SIGTERM (see _raise_exit): still report what was measured
        run.failures.append("terminated")
    finally:
        shutil.rmtree(run.workdir, ignore_errors=True)
    info["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    line = f"{machine_line(info)}; load(1m) at the end {info['loadavg_1m_end']}"
    if smoke:
        line += "\n\n**--smoke: tiny sizes, the figures mean nothing.**"
    parts = list(run.parts.values())
    print(render(parts, machine_line=line, failures=run.failures))
    if json_path is not None:
        params = {"smoke": smoke, "only": sorted(run.only), "sizes": asdict(sizes)}
        write_json(json_path, parts, machine=info, params=params, failures=run.failures)
    if plot_path is not None:
        from bench.plot import plot_throughput

        latency = sizes.scaling.latency_s
        plot_throughput(run.scaling_rows, plot_path,
                        title=f"One process, {latency:g} s simulated latency")  # fmt: skip
    return 1 if run.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    return run_suite(smoke=args.smoke, only=sorted(args.rows), json_path=args.json,
                     plot_path=args.plot)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
