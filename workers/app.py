"""The Celery application: ``celery -A workers.app worker -Q tier.fast`` works as is."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from celery.signals import (
    before_task_publish,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
)

from workers import signing
from workers.config import celery_config
from workers.observability import logs
from workers.queues import enqueue_stamp
from workers.settings import Settings, get_settings

# The modules a worker imports: the tasks, and the start-up hooks that warm a worker up.
TASK_MODULES = [
    "agents.tasks",
    "agents.agent_task",
    "agents.team_tasks",
    "agents.startup",
    "agents.liveness",
]


class RedactingAMQP(AMQP):  # type: ignore[misc]
    """Every task message gets a redacted, shortened ``argsrepr``/``kwargsrepr``: what Flower, the
    ``task-sent`` event and worker logs show instead of the job's prompt (docs/observability.md).

    Celery builds the ``task-sent`` event before ``before_task_publish`` fires, so this is the
    one place that covers every send: producers, ``Task.replace``, chords and retries.
    """

    def as_task_v2(
        self,
        task_id: str,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        *rest: Any,
        argsrepr: str | None = None,
        kwargsrepr: str | None = None,
        **options: Any,
    ) -> Any:
        """Celery's message, with the argument reprs redacted unless a caller gave its own."""
        if argsrepr is None or kwargsrepr is None:
            shown_args, shown_kwargs = logs.task_argsrepr(args or (), kwargs or {})
            argsrepr = shown_args if argsrepr is None else argsrepr
            kwargsrepr = shown_kwargs if kwargsrepr is None else kwargsrepr
        return super().as_task_v2(
            task_id, name, args, kwargs, *rest, argsrepr=argsrepr, kwargsrepr=kwargsrepr, **options
        )


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (default: the environment via celeryconfig)."""
    application = Celery("chordal", include=TASK_MODULES, amqp=RedactingAMQP)
    signing.register(settings or get_settings())
    if settings is None:
        application.config_from_object("celeryconfig")
    else:
        application.config_from_object(celery_config(settings))
    return application


@before_task_publish.connect  # type: ignore[untyped-decorator]
def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    # When each message entered its queue: the exporter and the router read queue age from it.
    if headers is not None:
        for key, value in enqueue_stamp().items():
            headers.setdefault(key, value)


@celeryd_init.connect  # type: ignore[untyped-decorator]
def _share_result_backend(conf: Any = None, instance: Any = None, **_: Any) -> None:
    # Celery gives every thread its own result backend, each with its own Redis pool: a tier
    # worker holding 500 calls kept ~500 connections open (chordal bench, row g). Redis clients
    # are thread-safe, so a worker's threads share one backend and its bounded pool. Producers
    # keep one per thread: waiting on results reads one pub/sub connection, not thread-safe.
    if conf is not None:
        conf.result_backend_thread_safe = True
    worker_app = getattr(instance, "app", None)
    if worker_app is not None:
        # Built now, before the pool's threads start, so they do not each build one at once.
        _ = worker_app.backend


@setup_logging.connect  # type: ignore[untyped-decorator]
def _configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connecting this stops Celery installing its own handlers: Chordal's redact every record.
    # The worker's own --loglevel wins over CHORDAL_LOG_LEVEL.
    settings = get_settings()
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    logs.configure_logging(
        level=str(level or settings.log_level),
        json_logs=settings.log_json,
        log_prompts=settings.log_prompts,
    )


@task_prerun.connect  # type: ignore[untyped-decorator]
def _bind_log_context(
    task_id: str = "", task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    root_id = getattr(getattr(task, "request", None), "root_id", None)
    logs.bind_task_context(
        task_id, root_id, task_name=getattr(task, "name", ""), tenant=logs.job_tenant(args, kwargs)
    )


@task_postrun.connect  # type: ignore[untyped-decorator]
def _clear_log_context(**_: Any) -> None:
    logs.clear_task_context()


app = create_app()
