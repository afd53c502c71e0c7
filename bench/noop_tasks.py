"""The floor: a plain Celery app whose task does nothing, with Chordal's delivery rules.

Start a worker with::

    CELERY_CONFIG_MODULE=bench CHORDAL_BENCH_BROKER_URL=redis://... \\
        python -m celery -A bench.noop_tasks worker -P threads -c 8 -Q bench.noop
"""

from __future__ import annotations

import os

from celery import Celery

# Shared with bench.naive_tasks, which imports from here (this module must not load LiteLLM).
BROKER_ENV = "CHORDAL_BENCH_BROKER_URL"
QUEUE = "bench.noop"
TASK = "bench.noop"


def plain_app(name: str, broker_url: str, *, queue: str, **extra: object) -> Celery:
    """A plain Celery app on ``broker_url`` (also the result backend) with Chordal's delivery
    rules (JSON, acks_late, prefetch 1), so a baseline differs from Chordal only where meant."""
    application = Celery(name)
    # An explicit config object keeps Chordal's ``celeryconfig`` out: this app is plain Celery.
    application.config_from_object(
        {
            "broker_url": broker_url,
            "result_backend": broker_url,
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
            "result_accept_content": ["json"],
            "task_acks_late": True,
            "worker_prefetch_multiplier": 1,
            "task_default_queue": queue,
            "broker_connection_retry_on_startup": True,
            "worker_hijack_root_logger": False,
            **extra,
        }
    )
    return application


def create_app(broker_url: str) -> Celery:
    """The no-op app on ``broker_url``."""
    return plain_app("bench-noop", broker_url, queue=QUEUE)


app = create_app(os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Nothing: what is left is Celery's own round trip."""
