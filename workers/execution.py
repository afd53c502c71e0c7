"""How a tier worker runs LLM calls: one long-lived event loop per worker process.

Celery's threads pool gives each task a thread; every task hands its coroutine to this single
loop and waits for the result. One loop per process is what keeps LiteLLM's pooled async clients
valid (a fresh ``asyncio.run`` per task breaks them: litellm #9133, #7288), and it lets one
process hold hundreds of calls in flight while threads only wait. This module is the seam the
performance work replaces; callers only use :func:`run`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopThread:
    """A daemon thread running one asyncio loop that other threads submit coroutines to."""

    def __init__(self, name: str = "chordal-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop and return a thread-safe future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block the calling thread until it finishes."""
        future = self.submit(coro)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop and join its thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


_lock = threading.Lock()
_shared: EventLoopThread | None = None


def shared_loop() -> EventLoopThread:
    """This process's loop, started on first use (thread and gevent pools skip process init)."""
    global _shared  # noqa: PLW0603 - one loop per process is the point of this module
    with _lock:
        if _shared is None:
            _shared = EventLoopThread()
        return _shared


def run(coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run ``coro`` on this process's shared loop from any thread."""
    return shared_loop().run(coro, timeout=timeout)
