"""Keep a worker's background loops alive: log a failure with its traceback, restart with backoff.

A worker process runs a few coroutines for its whole life on its shared event loop
(:mod:`workers.execution`): the cancel listener, the watchdog, the heartbeat. A task on that loop
that raises simply ends, and nobody reads its exception, so a Redis blip used to stop the cancel
listener for good while the worker went on taking jobs. :func:`supervise` runs such a loop again
each time it fails or returns, waiting ``min_backoff_s`` at first and twice as long after each
quick failure up to ``max_backoff_s``; a run that lasted ``reset_after_s`` counts as healthy and
starts the backoff over. Cancelling the supervisor cancels the loop, and nothing restarts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


async def supervise(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    min_backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
    reset_after_s: float | None = None,
) -> None:
    """Run ``factory()`` until cancelled, restarting it whenever it raises or returns.

    ``factory`` makes a fresh awaitable each time (a coroutine can be awaited only once), e.g.
    ``functools.partial(listen, url, in_flight)``. Each failure is logged with its traceback
    and the delay before the next run (``restart_in_s`` on the record). ``reset_after_s``
    (default ``max_backoff_s``) is how long a run must last to reset the delay.
    """
    if not 0 < min_backoff_s <= max_backoff_s:
        msg = f"backoff must satisfy 0 < min ({min_backoff_s}) <= max ({max_backoff_s})"
        raise ValueError(msg)
    healthy_after = max_backoff_s if reset_after_s is None else reset_after_s
    clock = asyncio.get_running_loop()
    delay = min_backoff_s
    while True:
        started = clock.time()
        error: Exception | None = None
        try:
            await factory()
        except Exception as exc:  # CancelledError is not an Exception: it stops the loop
            error = exc
        if clock.time() - started >= healthy_after:
            delay = min_backoff_s
        extra = {"loop": name, "restart_in_s": delay}
        if error is not None:
            logger.error(
                "background loop %s failed; restarting in %.3g s",
                name,
                delay,
                extra=extra,
                exc_info=error,
            )
            error = None  # the traceback holds the failed run's frames: let them go
        else:
            # These loops run until cancelled; returning means something ended them early.
            logger.warning(
                "background loop %s stopped; restarting in %.3g s", name, delay, extra=extra
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)
