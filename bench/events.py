"""Celery events of a benchmark run, recorded in a background thread.

Workers stamp each event with their own ``time.time()`` when it happens (task events are
buffered before they are sent, but stamped first), so on one machine event timestamps, result
``date_done`` values and this process's ``time.time()`` are one clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from celery import Celery
from celery.events.receiver import EventReceiver

from bench.procs import BenchError

READY_TIMEOUT_S = 15.0
Event = dict[str, Any]


class _Receiver(EventReceiver):  # type: ignore[misc]
    """An event receiver that says when its subscription is in place."""

    def __init__(self, *args: Any, ready: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ready = ready

    def on_consume_ready(
        self, connection: Any, channel: Any, consumers: Any, **kwargs: Any
    ) -> None:
        """Subscribed: events sent from now on are recorded."""
        super().on_consume_ready(connection, channel, consumers, **kwargs)
        self._ready.set()


class EventLog:
    """Every event the broker carries while the ``with`` block runs."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[Event] = []
        self._ready = threading.Event()
        self._receiver: _Receiver | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._capture, name="bench-events", daemon=True)

    def _capture(self) -> None:
        try:
            with self.app.connection_for_read() as connection:
                self._receiver = _Receiver(
                    connection, handlers={"*": self.events.append}, app=self.app,
                    ready=self._ready,
                )  # fmt: skip
                self._receiver.capture(limit=None, timeout=None, wakeup=False)
        except BaseException as exc:  # reported by the main thread, never lost in this one
            self._error = exc
            self._ready.set()

    def __enter__(self) -> EventLog:
        self._thread.start()
        if not self._ready.wait(READY_TIMEOUT_S) or self._error is not None:
            raise BenchError(f"event receiver did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        # The receiver checks should_stop at least once a second.
        self._thread.join(timeout=5.0)

    def matching(self, kind: str, **fields: Any) -> Iterator[Event]:
        """Events of type ``kind`` whose fields equal ``fields``."""
        for event in list(self.events):
            if event.get("type") == kind and all(event.get(k) == v for k, v in fields.items()):
                yield event

    def first(self, kind: str, **fields: Any) -> Event | None:
        """The earliest such event (by the sender's timestamp), if any."""
        found = sorted(self.matching(kind, **fields), key=lambda e: float(e["timestamp"]))
        return found[0] if found else None

    def wait_for(self, kind: str, *, timeout: float = 10.0, **fields: Any) -> Event:
        """Block until such an event arrived (task events reach us up to a second late)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.first(kind, **fields)
            if event is not None:
                return event
            time.sleep(0.05)
        raise BenchError(f"no {kind} event with {fields} within {timeout} s")

    def started(self, uuid: str, *, name: str, timeout: float = 10.0) -> float:
        """When task ``uuid`` started running as task ``name``.

        One id can run several times: a router task, then the agent task that replaced it on a
        tier worker; a team's chord callback and its finalize task carry the team's own id. The
        ``task-received`` event names the task; the first start on that worker after it is this
        one's.
        """
        received = self.wait_for("task-received", uuid=uuid, name=name, timeout=timeout)
        at, host = float(received["timestamp"]), received["hostname"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            starts = [
                float(e["timestamp"])
                for e in self.matching("task-started", uuid=uuid, hostname=host)
                if float(e["timestamp"]) >= at
            ]
            if starts:
                return min(starts)
            time.sleep(0.05)
        raise BenchError(f"no task-started event for {name}[{uuid}] within {timeout} s")
