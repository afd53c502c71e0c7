"""The floor: a plain Celery app whose task does nothing, with Chordal's delivery rules.

Start a worker with::

    CELERY_CONFIG_MODULE=bench CHORDAL_BENCH_BROKER_URL=redis://... \\
        python -m celery -A bench.noop_tasks worker -P threads -c 8 -Q bench.noop
"""

from __future__ import annotations

import os

from celery import Celery

# The same variable as bench.naive_tasks (not imported from there: that module loads LiteLLM).
BROKER_ENV = "CHORDAL_BENCH_BROKER_URL"
QUEUE = "bench.noop"
TASK = "bench.noop"


def create_app(broker_url: str) -> Celery:
    """A Celery app on ``broker_url`` (also the result backend): JSON, acks_late, prefetch 1."""
    application = Celery("bench-noop")
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
            "task_default_queue": QUEUE,
            "broker_connection_retry_on_startup": True,
            "worker_hijack_root_logger": False,
        }
    )
    return application


app = create_app(os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Nothing: what is left is Celery's own round trip."""
