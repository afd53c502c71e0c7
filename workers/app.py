"""The Celery application: ``celery -A workers.app worker -Q tier.fast`` works as is."""

from __future__ import annotations

from celery import Celery

from workers.config import celery_config
from workers.settings import Settings

TASK_MODULES = ["agents.tasks", "agents.team_tasks"]


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (default: the environment via celeryconfig)."""
    application = Celery("chordal", include=TASK_MODULES)
    if settings is None:
        application.config_from_object("celeryconfig")
    else:
        application.config_from_object(celery_config(settings))
    return application


app = create_app()
