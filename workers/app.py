"""The Celery application: ``celery -A workers.app worker -Q tier.fast`` works as is."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import before_task_publish

from workers.config import celery_config
from workers.queues import enqueue_stamp
from workers.settings import Settings

TASK_MODULES = ["agents.tasks", "agents.agent_task", "agents.team_tasks"]


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (default: the environment via celeryconfig)."""
    application = Celery("chordal", include=TASK_MODULES)
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


app = create_app()
