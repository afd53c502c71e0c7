"""Celery configuration derived from Chordal's settings.

``celeryconfig.py`` exposes the result for ``app.config_from_object``; :func:`celery_config`
builds it for any :class:`~workers.settings.Settings`, which is how tests and the local stack
point an app at a private broker.
"""

from __future__ import annotations

import math
from typing import Any

from kombu import Exchange, Queue

from workers import signing, tls
from workers.errors import ConfigurationError
from workers.redis_pools import BACKEND_CLASS, TRANSPORT_CLASS, is_redis_url
from workers.settings import Settings
from workers.tiers import ALL_QUEUES, ROUTER_QUEUE, ROUTER_TASKS

MAX_PRIORITY = 9
# A Redis that does not accept a connection is down: say so quickly, the retries wait.
CONNECT_TIMEOUT_S = 5.0


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for ``settings``; raises ConfigurationError when no broker is set."""
    if not settings.broker_url:
        msg = "no broker configured: set CHORDAL_BROKER_URL, or run `chordal dev` to start one"
        raise ConfigurationError(msg)
    if not settings.backend_url:
        msg = "no result backend: set CHORDAL_RESULT_BACKEND to a redis:// URL"
        raise ConfigurationError(msg)
    visibility = settings.visibility_timeout_s
    connections = settings.redis_pool_size
    return {
        "broker_url": settings.broker_url,
        **_redis_pools(settings.broker_url, settings.backend_url),
        # rediss://: certificate checks (and a client certificate) from CHORDAL_REDIS_TLS_*.
        **tls.celery_ssl(settings),
        **signing.celery_options(settings),
        # An agent task is acknowledged only once it finished, and given back to the queue if
        # its worker dies, so a crash never loses a job.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Reserving more than one message per slot would hide the backlog from autoscalers.
        "worker_prefetch_multiplier": 1,
        # A deferred copy waits out its countdown in the worker that took it, recorded as held
        # there (workers/fetch.py): given back if that worker dies. Celery raises the prefetch
        # by one per held countdown message; this caps what one process holds.
        "worker_eta_task_limit": settings.eta_task_limit,
        "task_time_limit": settings.task_time_limit_s,
        # A message a dead worker held comes back once it is older than the visibility timeout,
        # at the next sweep; kombu's default scans only every tenth sweep (~100 s), so scan at
        # each. kombu's default priority steps and separator stay as they are: a producer in
        # another codebase, with a plain Celery app, must be able to publish to these queues.
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "unacked_restore_interval": settings.restore_interval_s,
            "unacked_restore_throttle": 1,
            # Bounded pools that threads wait on (workers/redis_pools.py): a burst of hundreds
            # of threads must neither fail (redis-py's plain pools raise past their cap) nor
            # leave hundreds of idle connections behind.
            "max_connections": connections,
            # RabbitMQ: a publish returns once the broker confirmed it, so a submit (or a
            # hand-off) made as the broker goes down fails instead of vanishing (drill D9).
            # Redis replies to every LPUSH anyway; kombu ignores the option there.
            **({"confirm_publish": True} if _amqp(settings) else {}),
        },
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "redis_max_connections": connections,
        # A result or state write that meets a Redis blip is retried (Celery's own retry,
        # full jitter from 0.1 s up to 2 s between tries), for about CHORDAL_REDIS_RETRY_S:
        # an answer already paid for must not be lost to a restart or a failover.
        "result_backend_always_retry": True,
        "result_backend_base_sleep_between_retries_ms": 100,
        "result_backend_max_sleep_between_retries_ms": 2000,
        "result_backend_max_retries": max(5, math.ceil(settings.redis_retry_s)),
        "redis_socket_connect_timeout": CONNECT_TIMEOUT_S,
        "result_expires": settings.result_expires_s,
        # No STARTED state: it costs a result-backend write per task on the hot path, and the
        # router's ROUTED state (with model and tier) already tells a waiting client where the
        # job is.
        "task_track_started": False,
        # Each queue gets its own direct exchange and routing key: left to defaults, Celery binds
        # every queue to the default queue's exchange and key, and one message reaches them all.
        "task_queues": _queues(settings),
        "task_default_exchange": ROUTER_QUEUE,
        "task_default_routing_key": ROUTER_QUEUE,
        "task_queue_max_priority": None if _quorum(settings) else MAX_PRIORITY + 1,
        "task_default_queue": ROUTER_QUEUE,
        # Coordination tasks are light: they run beside the router, never on a tier's slots.
        "task_routes": {name: {"queue": ROUTER_QUEUE} for name in ROUTER_TASKS},
        "broker_connection_retry_on_startup": True,
        "worker_consumer": "workers.deadletter:DeadLetterConsumer",
        # Task events feed Flower (and any Celery event consumer); a benchmark may turn them off.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
    }


def _amqp(settings: Settings) -> bool:
    return str(settings.broker_url).startswith(("amqp", "pyamqp"))


def _quorum(settings: Settings) -> bool:
    return settings.rabbitmq_quorum and _amqp(settings)


def _queues(settings: Settings) -> list[Queue]:
    # RabbitMQ quorum queues count each message's deliveries (x-delivery-count) and drop one
    # past the limit. Chordal dead-letters at CHORDAL_MAX_DELIVERIES itself, with a record; the
    # broker's limit, one higher, is the backstop for a message no worker can even decode.
    arguments = (
        {"x-queue-type": "quorum", "x-delivery-limit": settings.max_deliveries + 1}
        if _quorum(settings)
        else None
    )
    return [
        Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=arguments)
        for name in ALL_QUEUES
    ]


def _redis_pools(broker_url: str, backend_url: str) -> dict[str, str]:
    # Redis URLs get the bounded-pool classes; what goes over the wire is unchanged.
    found = {"result_backend": backend_url}
    if is_redis_url(backend_url):
        found["result_backend"] = f"{BACKEND_CLASS}+{backend_url}"
    if is_redis_url(broker_url):
        found["broker_transport"] = TRANSPORT_CLASS
    return found
