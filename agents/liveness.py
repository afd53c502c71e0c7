"""A worker process's life: its heartbeat (:mod:`workers.recovery`), started before it consumes
anything and renewing its execution leases (:mod:`workers.lease`) at every beat, and its
graceful shutdown.

**Shutdown.** On SIGTERM Celery's warm shutdown stops consuming and waits for the running tasks.
Chordal bounds that wait: a task that has not started yet gives its message back at once, and
after ``CHORDAL_SHUTDOWN_GRACE_S`` every call still running is stopped and its message given
back to its queue (``Reject(requeue=True)``), where another worker takes it at once -- not after
the visibility timeout. Messages held for later (countdown requeues) go back when the
connection closes. The worker then exits 0.

:mod:`agents.startup` starts the heartbeat; Celery imports this module with the task modules
(:data:`workers.app.TASK_MODULES`) for its shutdown handlers.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery.signals import worker_shutdown, worker_shutting_down

from agents.answers import charge_lost_calls
from agents.base import leases
from agents.dead_members import end_dead_lettered
from agents.run import get_runtime
from workers import execution
from workers.app import app
from workers.deadletter import record_payload
from workers.recovery import Heartbeat, broker_client, held_key
from workers.redis_pools import is_redis_url, live_tags
from workers.settings import get_settings

logger = logging.getLogger(__name__)

_heartbeat: Heartbeat | None = None


def _dead_letter(payload: dict[str, Any], queue: str, reason: str) -> None:
    # Recorded as kombu keeps it, so `chordal dead-letters replay` sends it back as it came;
    # raises if Redis refuses, and the message then stays where it is until the next beat.
    record_payload(app, payload, queue=queue, reason=reason)
    # The job ends (a team member as a failed member) rather than waiting for ever for a
    # message that is now on the dead-letter list.
    end_dead_lettered(app, payload, reason)


def start_heartbeat() -> None:
    """Beat from now on: this worker counts as alive, and records what it holds. Called by
    :mod:`agents.startup` once the worker's checks passed, before it consumes anything."""
    global _heartbeat  # noqa: PLW0603 - one heartbeat per worker process
    settings = get_settings()
    redis_broker = is_redis_url(settings.broker_url)
    # On RabbitMQ the broker gives a dead consumer's messages back itself: the beat only
    # renews leases, in the result backend's Redis.
    url = settings.broker_url if redis_broker else settings.backend_url
    if not url or _heartbeat is not None:
        return
    _heartbeat = Heartbeat(
        app=app,
        broker=broker_client(str(url)),
        interval_s=settings.heartbeat_interval_s,
        dead_after_s=settings.worker_dead_after_s,
        max_deliveries=settings.max_deliveries,
        dead_letter=_dead_letter,
        on_beat=[leases().renew],
        restore=redis_broker,
        live_tags=live_tags,
        on_dead=_charge_lost_calls,
    ).start()
    logger.info("heartbeat: worker %s beats every %.1f s", _heartbeat.worker,
                settings.heartbeat_interval_s)  # fmt: skip


def _charge_lost_calls(worker: str) -> None:
    runtime = get_runtime()
    charged = charge_lost_calls(runtime.fleet.client, runtime.fleet, worker)
    if charged:
        logger.warning("worker %s died with %d call(s) in flight: charged at their worst case",
                       worker, charged)  # fmt: skip


@worker_shutting_down.connect
def begin_shutdown(**_: Any) -> None:
    """Start no new call; stop the calls still running once the grace runs out."""
    execution.STOPPING.set()
    grace = get_settings().shutdown_grace_s
    threading.Thread(
        target=_stop_after, args=(grace,), name="chordal-shutdown", daemon=True
    ).start()
    logger.info("shutting down: running calls have %.0f s to finish", grace)


def _stop_after(grace_s: float) -> None:
    time.sleep(grace_s)
    logger.warning("shutdown grace of %.0f s is over: giving back the calls still running",
                   grace_s)  # fmt: skip
    execution.stop_calls()


@worker_shutdown.connect
def stop_heartbeat(**_: Any) -> None:
    """Stop beating. A worker that gave everything back leaves the set at once; one that still
    holds messages lets its beat lapse, so a live worker gives them back."""
    global _heartbeat
    beating, _heartbeat = _heartbeat, None
    if beating is None:
        return
    try:
        holds = bool(beating.broker.hlen(held_key(beating.worker)))
    except Exception:
        holds = True
    beating.stop(leave_fleet=not holds)
