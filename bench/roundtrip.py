"""Rows a and b: a raw Celery no-op round trip (the floor) and a Chordal job, on one broker.

* a: ``bench.noop`` on a plain Celery threads worker (8 threads, acks_late, prefetch 1, JSON):
  publish, run nothing, store the result, wake the caller -- one hop.
* b: ``Client.submit`` of a one-agent job (summarizer, pinned to the fast tier) on the local
  stack with a zero-latency simulator: the router task routes it and replaces itself with the
  agent task, which makes one LiteLLM call -- two hops, a routing decision and an HTTP call.

Both time round trips one at a time (send to result, the caller waiting on the result
backend's pub/sub, so no polling interval is counted) and the throughput of a batch published
at once. The target compares (b) with (a) of the same run: p50 at most twice the floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.result import AsyncResult

from bench.celery_load import Batch, run_batch, wait_consuming
from bench.events import EventLog
from bench.floor import CpuMeter, CpuPerMessage, JobCall, add_cpu_figures
from bench.procs import BenchError, Child, Children, child_env
from bench.stages import stage_medians, stage_table, traced_round_trips
from bench.suite_report import Part, percentile, ratio
from chordal.stack import LocalStack

NOOP_THREADS = 8
TARGET_RATIO = 2.0
RESULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Sizes:
    """How many round trips to time one by one, and the throughput batch."""

    samples: int
    batch: int
    warmup: int = 5


@dataclass(frozen=True)
class Timings:
    """Round trips in seconds, a batch's throughput and the workers' CPU per message."""

    round_trips: list[float]
    per_s: float
    cpu: tuple[CpuPerMessage, ...] = ()

    @property
    def p50_ms(self) -> float:
        """Median round trip, milliseconds."""
        return percentile(self.round_trips, 50) * 1000

    @property
    def p95_ms(self) -> float:
        """95th percentile round trip, milliseconds."""
        return percentile(self.round_trips, 95) * 1000

    def as_json(self) -> dict[str, Any]:
        """The figures (not every sample)."""
        return {
            "samples": len(self.round_trips),
            "p50_ms": round(self.p50_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "max_ms": round(max(self.round_trips) * 1000, 3),
            "per_s": round(self.per_s, 1),
            "cpu_ms_per_message": [entry.as_json() for entry in self.cpu],
        }


def time_round_trips(send: Callable[[int], AsyncResult], count: int) -> list[float]:
    """Seconds from ``send(n)`` to its result, one job at a time."""
    samples = []
    for n in range(count):
        started = time.perf_counter()
        send(n).get(timeout=RESULT_TIMEOUT_S)
        samples.append(time.perf_counter() - started)
    return samples


def raw_celery(broker_url: str, children: Children, sizes: Sizes) -> tuple[Part, Timings]:
    """Row a: a plain Celery worker running a no-op task on ``broker_url``."""
    from bench import noop_tasks

    env = child_env(CELERY_CONFIG_MODULE="bench", **{noop_tasks.BROKER_ENV: broker_url})
    command = ["-m", "celery", "-A", "bench.noop_tasks", "worker", "-P", "threads"]
    command += ["-c", str(NOOP_THREADS), "-Q", noop_tasks.QUEUE, "--prefetch-multiplier", "1"]
    command += ["-n", "noop@%h", "-l", "WARNING", "--without-mingle", "--without-gossip"]
    app = noop_tasks.create_app(broker_url)
    batch = Batch(task=noop_tasks.TASK, queue=noop_tasks.QUEUE, args=lambda _n: [], kwargs={})
    worker = children.spawn("noop", command, env)
    cpu = CpuMeter({"raw Celery worker": worker})
    try:
        wait_consuming(app, noop_tasks.QUEUE, worker)
        send = lambda _n: app.send_task(noop_tasks.TASK, queue=noop_tasks.QUEUE)  # noqa: E731
        time_round_trips(send, sizes.warmup)
        with cpu.phase("one_at_a_time", sizes.samples):
            trips = time_round_trips(send, sizes.samples)
        with cpu.phase("batch", sizes.batch):
            result = run_batch(
                app, batch, sizes.batch, worker=worker, timeout=60 + sizes.batch * 0.1,
                stall_s=30,
            )  # fmt: skip
    finally:
        children.stop(worker)
        app.close()
    timings = Timings(trips, sizes.batch / result.wall_s, cpu.per_message())
    part = Part("a", "Raw Celery no-op round trip (the floor)")
    part.add("no-op round trip p50", timings.p50_ms, "ms")
    part.add("no-op round trip p95", timings.p95_ms, "ms")
    part.add("no-op throughput", timings.per_s, "tasks/s")
    part.details = {**timings.as_json(), "worker": f"threads pool, {NOOP_THREADS} threads"}
    add_cpu_figures(part, timings.cpu, per="task", phase="batch")
    part.notes += [
        f"plain Celery {NOOP_THREADS}-thread worker on the stack's Valkey: acks_late, prefetch 1, "
        "JSON, task events off (Celery's default); round trips one at a time, throughput "
        f"over {sizes.batch} tasks published at once",
        "worker CPU per task: utime + stime of the worker process (all threads, /proc, 10 ms "
        "ticks) across the timed round trips or the batch, divided by their count: what Celery "
        "alone costs a worker per message (consume, trace, store the result, ack)",
    ]
    return part, timings


def _worker(stack: LocalStack, name: str) -> Child:
    # The router is "router"; the stack names a tier's workers "<tier>-<n>".
    found = next(
        (c for c in stack.children if c.name == name or c.name.startswith(f"{name}-")), None
    )
    if found is None:
        raise BenchError(f"the stack has no {name} worker")
    return Child(found.name, found.process, found.log)


def chordal_job(
    stack: LocalStack, sizes: Sizes, floor: Timings | None
) -> tuple[Part, JobCall | None]:
    """Row b: one-agent jobs through the router and the fast tier worker; also the LLM call
    the jobs made (model, output budget), for :func:`bench.floor.bare_call`."""
    from agents.client import Client
    from agents.job import parse_job
    from workers.tiers import ROUTE_TASK, ROUTER_QUEUE, Tier, transport_priority

    def job(n: int) -> dict[str, Any]:
        # Unpinned: the router routes it (to fast: the summarizer's tier) and hands it over.
        return {"agent": "summarizer", "input": f"Round trip {n}: a short text."}

    def pinned(n: int) -> dict[str, Any]:
        # Pinned to fast: straight to the tier worker, which routes it itself.
        return {**job(n), "tier": "fast"}

    client = Client(settings=stack.settings)
    broker_url = str(stack.settings.broker_url)
    batch = Batch(
        task=ROUTE_TASK, queue=ROUTER_QUEUE,
        args=lambda n: [parse_job(job(n)).model_dump(mode="json")], kwargs={},
        priority=transport_priority(5, broker_url=broker_url),
    )  # fmt: skip
    llm_s: list[float] = []
    calls: list[JobCall] = []
    router = _worker(stack, "router")
    cpu = CpuMeter({"router worker": router, "fast tier worker": _worker(stack, Tier.FAST.value)})

    def send(n: int) -> AsyncResult:
        return AsyncResult(client.submit(job(n)), app=client.app)

    def send_pinned(n: int) -> AsyncResult:
        return AsyncResult(client.submit(pinned(n)), app=client.app)

    def send_and_record(n: int) -> AsyncResult:
        result = send(n)
        answer = result.get(timeout=RESULT_TIMEOUT_S)
        llm_s.append(float(answer["latency_s"]))
        calls.append(JobCall(answer["model"], int(answer["decision"]["max_output_tokens"])))
        return result

    try:
        time_round_trips(send, sizes.warmup)
        with EventLog(client.app) as events:
            with cpu.phase("one_at_a_time", sizes.samples):
                trips, marks = traced_round_trips(client, job, sizes.samples)
            stages = stage_medians(events, marks)
        pinned_trips = time_round_trips(send_pinned, sizes.samples)
        # The answers' own call times, in a separate pass so reading them is not timed.
        time_round_trips(send_and_record, min(sizes.samples, 20))
        with cpu.phase("batch", sizes.batch):
            result = run_batch(
                client.app, batch, sizes.batch, worker=router,
                timeout=60 + sizes.batch * 0.5, stall_s=30,
            )  # fmt: skip
    finally:
        client.app.close()
    if result.errors:
        raise BenchError(f"{result.errors} of {sizes.batch} jobs failed: {result.first_error}")
    timings = Timings(trips, sizes.batch / result.wall_s, cpu.per_message())
    part = _job_part(timings, pinned_trips, llm_s, stages, sizes=sizes, floor=floor)
    return part, calls[0] if calls else None


def _job_part(
    timings: Timings,
    pinned_trips: list[float],
    llm_s: list[float],
    stages: dict[str, float],
    *,
    sizes: Sizes,
    floor: Timings | None,
) -> Part:
    """Row b's figures: the unpinned job's round trips, its stages and the pinned job's."""
    pinned_p50 = percentile(pinned_trips, 50) * 1000
    part = Part("b", "A Chordal job through router and tier worker, zero-latency simulator")
    if floor is None:
        part.add("job round trip p50", timings.p50_ms, "ms")
        part.add("pinned job round trip p50 (no router hop)", pinned_p50, "ms")
        part.notes.append("row a not run: no ratio")
    else:
        p50_ratio = ratio(timings.p50_ms, floor.p50_ms)
        part.add(
            "job round trip p50", timings.p50_ms, "ms", compared=f"{p50_ratio:.2f}x (a)",
            target=f"≤ {TARGET_RATIO:.0f}x (a) p50", met=p50_ratio <= TARGET_RATIO,
        )  # fmt: skip
        part.add("job round trip p95", timings.p95_ms, "ms",
                 compared=f"{ratio(timings.p95_ms, floor.p95_ms):.2f}x (a)")  # fmt: skip
        part.add("job throughput", timings.per_s, "jobs/s",
                 compared=f"{ratio(timings.per_s, floor.per_s):.2f}x (a)")  # fmt: skip
        part.add("pinned job round trip p50 (no router hop)", pinned_p50, "ms",
                 compared=f"{ratio(pinned_p50, floor.p50_ms):.2f}x (a)")  # fmt: skip
    raw = floor.cpu[0] if floor is not None and floor.cpu else None
    add_cpu_figures(part, timings.cpu, per="job", phase="one_at_a_time", floor=raw)
    llm_p50 = percentile(llm_s, 50) * 1000
    part.details = {
        **timings.as_json(), "pinned_p50_ms": round(pinned_p50, 3),
        "llm_call_p50_ms": round(llm_p50, 3), "stages_ms": stages,
    }  # fmt: skip
    part.table = stage_table(stages) if stages else ""
    part.notes = [
        *part.notes,
        f"the agent task's LLM call itself (its recorded latency_s, the simulator answering at "
        f"once) takes {llm_p50:.1f} ms at p50; stages from the producer's and workers' task "
        "events (one clock); each sum differs from the round trip's median by rounding",
        "the stack's workers send task events (Chordal's default, for Flower); row a's do not",
        f"throughput: {sizes.batch} route messages published at once, as Client.submit sends "
        "them; the router has 8 threads, the fast tier worker 256",
        "router / tier worker CPU per job: each process's utime + stime (/proc, 10 ms ticks) "
        "across the timed one-at-a-time round trips or the batch, divided by the jobs",
        "the round trips and the stages are of unpinned jobs (through the router); the pinned "
        "job (tier fast) goes straight to the tier worker, which routes it itself",
    ]
    return part
