"""A worker process's start: warm up before the first message, then the background loops.

Celery imports this module with the task modules (:data:`workers.app.TASK_MODULES`), and its
``worker_init`` handler runs before the consumer starts.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init

from agents.job import Job
from agents.run import get_runtime, live_plan
from workers import execution, watchdog
from workers.app import app
from workers.cancellation import listen
from workers.observability import metrics, tracing

logger = logging.getLogger(__name__)

# Workers trace (and export) only when the standard OTEL_* variables ask for it.
tracing.connect_worker_signals()


@worker_init.connect
def _warm_up(**_: Any) -> None:
    # Load the catalog, LiteLLM's price map and the tokenizer, and start the event loop before
    # the first message arrives, so the first job is not the slow one.
    runtime = get_runtime()
    live_plan(Job(agent=runtime.agents.names()[0], input="warm up"), runtime, budget_id="warm-up")
    if runtime.settings.metrics_port:
        metrics.serve(runtime.settings.metrics_port)
    loop = execution.shared_loop()
    # Calls in flight on this process stop when their job is cancelled.
    loop.start(listen(str(runtime.settings.backend_url), execution.IN_FLIGHT))
    settings = runtime.settings
    loop.start(
        watchdog.run(app, interval_s=settings.watchdog_interval_s, ttl_s=settings.result_expires_s)
    )
    logger.info(
        "chordal worker ready: %d models, profile %s",
        len(runtime.catalog.models),
        runtime.catalog.profile,
    )
