"""Drive a Celery worker: wait until it consumes, publish a batch, time it to the last result."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.result import ResultSet

from bench.procs import BenchError, Child

READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Batch:
    """One kind of message: task name, its arguments and where it goes."""

    task: str
    queue: str
    args: Callable[[int], list[Any]]
    kwargs: dict[str, Any]
    priority: int | None = None


@dataclass(frozen=True)
class BatchResult:
    """How a batch went: successes, failures and seconds from first publish to last result."""

    ok: int
    errors: int
    wall_s: float
    first_error: str | None


def wait_consuming(app: Celery, queue: str, worker: Child) -> None:
    """Block until some worker consumes ``queue``; raise BenchError if ``worker`` dies first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        worker.check_alive()
        replies = app.control.inspect(timeout=1.0).active_queues() or {}
        if any(q["name"] == queue for queues in replies.values() for q in queues):
            return
        time.sleep(0.2)
    raise BenchError(f"{worker.name} not consuming {queue} after {READY_TIMEOUT_S} s")


def run_batch(
    app: Celery, batch: Batch, calls: int, *, worker: Child, timeout: float, stall_s: float
) -> BatchResult:
    """Publish ``calls`` messages, then wait for every result; the wall time covers both.

    Raises BenchError when the worker dies, or when no result arrives for ``stall_s`` seconds
    (a worker that lost messages would otherwise keep the run waiting for ``timeout``).
    """
    options: dict[str, Any] = {"queue": batch.queue}
    if batch.priority is not None:
        options["priority"] = batch.priority
    started = time.perf_counter()
    # One producer (one connection) for the whole batch: the cost left is Celery's own.
    with app.producer_or_acquire() as producer:
        results = [
            app.send_task(
                batch.task, args=batch.args(n), kwargs=batch.kwargs, producer=producer, **options
            )
            for n in range(calls)
        ]
    ok, errors, first_error = 0, 0, None
    last_progress = time.monotonic()

    def check() -> None:
        worker.check_alive()
        if time.monotonic() - last_progress > stall_s:
            msg = f"{worker.name}: no result for {stall_s:.0f} s, {ok + errors}/{calls} done"
            raise BenchError(f"{msg}; its log ends:\n{worker.tail(8)}")

    # iter_native waits on the Redis backend's pub/sub channel: no polling interval to blur the
    # end time; on_interval runs about once a second while it waits.
    finished = False
    try:
        for _task_id, meta in ResultSet(results, app=app).iter_native(
            timeout=timeout, on_interval=check
        ):
            last_progress = time.monotonic()
            if meta["status"] == "SUCCESS":
                ok += 1
            else:
                errors += 1
                first_error = first_error or f"{meta['status']}: {meta.get('result')!r}"
        finished = True
    except TimeoutError as exc:
        msg = f"{worker.name}: {ok + errors}/{calls} results after {timeout:.0f} s"
        raise BenchError(msg) from exc
    finally:
        if not finished:
            _release(app, results)
    wall = time.perf_counter() - started
    return BatchResult(ok=ok, errors=errors, wall_s=wall, first_error=first_error)


def _release(app: Celery, results: list[Any]) -> None:
    """Unsubscribe from results that will never come, while the broker still runs."""
    # Left to AsyncResult.__del__, this happens whenever the traceback holding them is
    # collected -- possibly after the broker stopped, when it fails noisily.
    for result in results:
        with contextlib.suppress(Exception):
            app.backend.remove_pending_result(result)
        result.backend = None
