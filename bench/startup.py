"""Row e: what a producer pays to import and submit, and how long a tier worker takes to start.

* Import: ``import agents.client`` timed inside a fresh interpreter (``python -c``), which also
  reports whether LiteLLM got imported; the baseline is a plain Celery producer's imports
  (``from celery import Celery`` and ``AsyncResult``). Median of several fresh processes.
* Submit: ``Client.submit`` of a one-agent job, one at a time, against the stack's Valkey but a
  database no worker consumes (so the router's work does not compete for the CPU); the baseline
  is ``app.send_task`` of the same message on the same app.
* Cold start: one agent task is waiting on ``tier.fast`` when ``chordal worker --tier fast`` is
  spawned; from the spawn to the worker's ``worker-online`` event (LiteLLM, the catalog and the
  event loop are loaded in ``worker_init``, before that), to the ``task-received`` event of the
  waiting task, and to its result. The baseline is a plain Celery worker (``bench.noop_tasks``)
  spawned the same way, to its no-op result.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.events import EventLog
from bench.procs import REPO_ROOT, BenchError, Child, child_env
from bench.suite_report import Part, percentile, ratio
from bench.tier_env import TierEnv
from chordal.stack import LocalStack

TITLE = "Producer import and submit, tier worker cold start"
IMPORT_TARGET_S = 0.5
PRODUCER = "import agents.client"
PLAIN_CELERY = "from celery import Celery; from celery.result import AsyncResult"
IMPORT_CODE = """
import json, sys, time
started = time.perf_counter()
{statement}
elapsed = time.perf_counter() - started
print(json.dumps({{"import_s": elapsed, "litellm": "litellm" in sys.modules}}))
"""
# No worker consumes this database of the stack's Valkey.
IDLE_DB = 15
COLD_START_TIMEOUT_S = 180.0


def _import_once(statement: str) -> tuple[float, float, bool]:
    code = IMPORT_CODE.format(statement=statement)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=child_env(), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"python -c {statement!r} failed:\n{done.stderr[-2000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return float(data["import_s"]), wall, bool(data["litellm"])


def import_times(part: Part, *, repeats: int) -> None:
    """Median import time of the producer and of a plain Celery producer, fresh processes."""
    runs = {stmt: [_import_once(stmt) for _ in range(repeats)] for stmt in (PRODUCER, PLAIN_CELERY)}
    producer = statistics.median(r[0] for r in runs[PRODUCER])
    plain = statistics.median(r[0] for r in runs[PLAIN_CELERY])
    litellm = any(r[2] for r in runs[PRODUCER])
    part.add(
        "import agents.client", producer, "s",
        compared=f"{ratio(producer, plain):.2f}x plain Celery producer ({plain:.3f} s)",
        target=f"≤ {IMPORT_TARGET_S} s", met=producer <= IMPORT_TARGET_S,
    )  # fmt: skip
    part.add("LiteLLM imported by the producer", float(litellm), "bool", target="no",
             met=not litellm)  # fmt: skip
    part.details["import"] = {
        "repeats": repeats,
        "producer_import_s": round(producer, 4),
        "producer_process_s": round(statistics.median(r[1] for r in runs[PRODUCER]), 4),
        "plain_celery_import_s": round(plain, 4),
        "litellm_imported": litellm,
    }
    part.notes.append(
        f"import: median of {repeats} fresh interpreters, timed inside each around the import "
        f"statement; baseline `{PLAIN_CELERY}`"
    )


def _time_calls(call: Callable[[int], object], count: int) -> list[float]:
    samples = []
    for n in range(count):
        started = time.perf_counter()
        call(n)
        samples.append(time.perf_counter() - started)
    return samples


def submit_latency(part: Part, stack: LocalStack, *, samples: int) -> None:
    """``Client.submit`` p50/p95 against ``send_task`` of the same message."""
    from agents.client import Client
    from agents.job import parse_job
    from workers.tiers import ROUTE_TASK, ROUTER_QUEUE, transport_priority

    url = f"{str(stack.settings.broker_url).rsplit('/', 1)[0]}/{IDLE_DB}"
    client = Client(settings=stack.settings.model_copy(update={"broker_url": url,
                                                              "result_backend": url}))  # fmt: skip

    def job(n: int) -> dict[str, Any]:
        return {"agent": "summarizer", "input": f"Submit {n}: a short text.", "tier": "fast"}

    priority = transport_priority(5, broker_url=url)

    def raw(n: int) -> None:
        message = parse_job(job(n)).model_dump(mode="json")
        client.app.send_task(ROUTE_TASK, args=[message], queue=ROUTER_QUEUE, priority=priority)

    try:
        _time_calls(lambda n: client.submit(job(n)), 5)
        submits = _time_calls(lambda n: client.submit(job(n)), samples)
        _time_calls(raw, 5)
        raws = _time_calls(raw, samples)
        client.app.backend.client.flushdb()
    finally:
        client.app.close()
    p50, p95 = percentile(submits, 50) * 1000, percentile(submits, 95) * 1000
    raw50, raw95 = percentile(raws, 50) * 1000, percentile(raws, 95) * 1000
    part.add("Client.submit p50", p50, "ms", compared=f"{ratio(p50, raw50):.2f}x send_task")
    part.add("Client.submit p95", p95, "ms", compared=f"{ratio(p95, raw95):.2f}x send_task")
    part.details["submit"] = {
        "samples": samples, "p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
        "send_task_p50_ms": round(raw50, 3), "send_task_p95_ms": round(raw95, 3),
    }  # fmt: skip
    part.notes.append(
        f"submit: {samples} one-agent jobs one at a time on the stack's Valkey (database "
        f"{IDLE_DB}, which no worker consumes); baseline app.send_task of the same message"
    )


def _online_at(events: EventLog, prefix: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events.matching("worker-online"):
            if str(event.get("hostname", "")).startswith(prefix):
                return float(event["timestamp"])
        time.sleep(0.05)
    raise BenchError(f"no worker-online event from {prefix}* within {timeout} s")


def cold_start(part: Part, env: TierEnv, *, concurrency: int) -> Child:
    """Spawn a fast-tier worker with one task waiting; returns the (running) worker."""
    with EventLog(env.app) as events:
        waiting = env.send(0)
        spawned = time.time()
        worker = env.spawn_worker("cold-start", concurrency=concurrency)
        waiting.get(timeout=COLD_START_TIMEOUT_S)
        answered = time.time()
        online = _online_at(events, f"fast-{worker.process.pid}@", timeout=10)
        received = float(events.wait_for("task-received", uuid=waiting.id)["timestamp"])
    plain = _plain_worker_start(env)
    to_result = answered - spawned
    part.add("tier worker cold start: spawn → ready (worker-online)", online - spawned, "s")
    part.add(
        "tier worker cold start: spawn → first task consumed", received - spawned, "s",
        compared=f"first result after {to_result:.2f} s; plain Celery worker {plain:.2f} s "
        f"({ratio(to_result, plain):.1f}x)",
    )  # fmt: skip
    part.details["cold_start"] = {
        "to_online_s": round(online - spawned, 3),
        "to_first_received_s": round(received - spawned, 3),
        "to_first_result_s": round(to_result, 3),
        "plain_celery_to_first_result_s": round(plain, 3),
    }
    part.notes.append(
        "cold start: one agent task already queued when `chordal worker --tier fast` is "
        "spawned; worker-online and task-received are the worker's own events; the baseline is "
        "a plain Celery worker with a no-op task queued, spawn to result"
    )
    return worker


def _plain_worker_start(env: TierEnv) -> float:
    """Spawn → first result of a plain Celery worker with a no-op task waiting."""
    from bench import noop_tasks

    broker_url = env.bench.broker_url
    app = noop_tasks.create_app(broker_url)
    command = ["-m", "celery", "-A", "bench.noop_tasks", "worker", "-P", "threads", "-c", "8"]
    command += ["-Q", noop_tasks.QUEUE, "-n", "noop-cold@%h", "-l", "WARNING"]
    command += ["--without-mingle", "--without-gossip"]
    env_vars = child_env(CELERY_CONFIG_MODULE="bench", **{noop_tasks.BROKER_ENV: broker_url})
    children = env.bench.children
    try:
        waiting = app.send_task(noop_tasks.TASK, queue=noop_tasks.QUEUE)
        spawned = time.perf_counter()
        worker = children.spawn("noop-cold", command, env_vars)
        try:
            waiting.get(timeout=COLD_START_TIMEOUT_S)
            return time.perf_counter() - spawned
        finally:
            children.stop(worker)
    finally:
        app.close()
