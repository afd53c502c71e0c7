"""Row g: resident memory per LLM call held in flight by one tier worker process.

The worker (threads pool, concurrency ≥ N) first answers a warm-up batch at zero latency, so
LiteLLM's client, the catalog and the first threads exist; its RSS is read then (``RSS_0``).
The simulator is then made slow (every model, far longer than the run), N agent tasks are
published, and once the simulator holds all N calls the RSS is read again (``RSS_N``). The
figure is ``(RSS_N - RSS_0) / N``: threads, Celery requests, the agent's objects and LiteLLM's
request state of a call waiting on the provider. RSS is ``VmRSS`` from ``/proc``, the median of
five readings. The worker is killed afterwards (its calls would wait for the slow simulator).

The baseline, in the same run, is a bare asyncio loop (``bench.bare_memory``) holding N
``litellm.acompletion`` calls the same way: LiteLLM's own per-call memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import Any

from bench import rss
from bench.celery_load import run_batch, wait_consuming
from bench.procs import BenchError, Child, child_env
from bench.suite_report import Part, ratio
from bench.tier_env import TierEnv

TARGET_KB = 100.0
HOLD_MODEL = "bench-hold"
STALL_S = 10.0


def _wait_in_flight(env: TierEnv, worker: Child | None, before: int, calls: int) -> int:
    """Wait until the simulator holds ``calls`` more calls (or stops gaining); returns it."""
    best, gained_at = 0, time.monotonic()
    while True:
        if worker is not None:
            worker.check_alive()
        held = int(env.bench.admin.stats()["in_flight"]) - before
        if held > best:
            best, gained_at = held, time.monotonic()
        if best >= calls or time.monotonic() - gained_at > STALL_S:
            return best
        time.sleep(0.1)


def tier_worker_memory(env: TierEnv, worker: Child, *, calls: int, hold_s: float) -> dict[str, Any]:
    """RSS of ``worker`` idle after warm-up and with ``calls`` calls in flight (kills it)."""
    admin = env.bench.admin
    try:
        wait_consuming(env.app, env.batch.queue, worker)
        warmup = run_batch(env.app, env.batch, min(calls, 50), worker=worker, timeout=120,
                           stall_s=30)  # fmt: skip
        if warmup.errors:
            raise BenchError(f"warm-up: {warmup.errors} calls failed: {warmup.first_error}")
        time.sleep(1.0)
        idle = rss.sample(worker.process.pid)
        admin.fault("*", latency_median_s=hold_s, latency_sigma=0.0)
        before = int(admin.stats()["in_flight"])
        # No result subscriptions: these calls are abandoned when the worker is killed.
        for n in range(calls):
            env.send(n, ignore_result=True)
        held = _wait_in_flight(env, worker, before, calls)
        time.sleep(0.5)
        loaded = rss.sample(worker.process.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGKILL)
        env.bench.children.stop(worker)
        admin.reset()
    return {"calls": calls, "in_flight": held, "idle": idle, "loaded": loaded}


def bare_memory(env: TierEnv, *, calls: int, hold_s: float) -> dict[str, Any]:
    """The same figure for a bare asyncio LiteLLM loop in its own process."""
    bench = env.bench
    bench.admin.fault(HOLD_MODEL, latency_median_s=hold_s, latency_sigma=0.0)
    args = ["-m", "bench.bare_memory", "--sim", bench.admin.root, "--calls", str(calls)]
    args += ["--hold-model", HOLD_MODEL]
    child = bench.children.spawn("bare-memory", args, child_env())
    try:
        child.process.wait(timeout=240)
    finally:
        bench.children.stop(child)
        bench.admin.reset()
    if child.process.returncode != 0:
        raise BenchError(
            f"bench.bare_memory exited with {child.process.returncode}:\n{child.tail()}"
        )
    lines = [ln for ln in child.log.read_text().splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"bench.bare_memory printed no result:\n{child.tail()}")
    return dict(json.loads(lines[-1]))


def per_call_kb(run: dict[str, Any], field: str = "VmRSS") -> float:
    """``(RSS_N - RSS_0) / N`` in kB, N being the calls opened."""
    return float(run["loaded"][field] - run["idle"][field]) / int(run["calls"])


def memory_part(worker_run: dict[str, Any], bare_run: dict[str, Any] | None) -> Part:
    """Row g's figures from the two measurements."""
    part = Part("g", "Memory per in-flight call in a tier worker")
    value = per_call_kb(worker_run)
    compared = ""
    part.verdicts["g_kb_per_call"] = round(value, 1)
    if bare_run is not None:
        bare = per_call_kb(bare_run)
        compared = f"{ratio(value, bare):.1f}x bare LiteLLM loop ({bare:.1f} kB/call)"
        part.verdicts["g_vs_bare"] = ratio(value, bare)
    part.add(
        f"RSS per in-flight call ({worker_run['calls']} held)", value, "kB", compared=compared,
        target=f"≤ {TARGET_KB:.0f} kB", met=value <= TARGET_KB,
    )  # fmt: skip
    part.details = {"tier_worker": worker_run, "bare_asyncio": bare_run}
    idle, loaded = worker_run["idle"], worker_run["loaded"]
    part.notes = [
        f"tier worker: VmRSS {idle['VmRSS'] / 1024:.1f} → {loaded['VmRSS'] / 1024:.1f} MB, "
        f"threads {idle['Threads']} → {loaded['Threads']}, open sockets "
        f"{idle.get('Sockets', '?')} → {loaded.get('Sockets', '?')}, simulator held "
        f"{worker_run['in_flight']}/{worker_run['calls']} calls; anonymous memory "
        f"{per_call_kb(worker_run, 'RssAnon'):.1f} kB/call",
    ]
    if bare_run is not None:
        part.notes.append(
            f"bare asyncio loop: VmRSS {bare_run['idle']['VmRSS'] / 1024:.1f} → "
            f"{bare_run['loaded']['VmRSS'] / 1024:.1f} MB, open sockets "
            f"{bare_run['idle'].get('Sockets', '?')} → {bare_run['loaded'].get('Sockets', '?')}, "
            "simulator held "
            f"{bare_run['in_flight']}/{bare_run['calls']} calls"
        )
    return part
