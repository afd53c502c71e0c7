"""A worker process's start: check and warm up before the first message, then the background
loops, each under :func:`workers.supervise.supervise`.

Celery imports this module with the task modules (:data:`workers.app.TASK_MODULES`). Its
``celeryd_after_setup`` handler runs in the worker program (``celery -A workers.app worker`` and
``chordal worker`` alike) once logging is set up and before any bootstep has started: no pool,
no consumer, nothing taken from a queue. If the catalog or the agents file is wrong, Redis does
not answer within ``startup_wait_s``, or the warm-up fails, the worker logs why and exits with
:data:`EXIT_CONFIG`, :data:`EXIT_UNAVAILABLE` or :data:`EXIT_FAILED`. (Celery logs an exception
from a ``worker_init`` handler and consumes anyway; such a worker failed every job it took.)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NoReturn

import redis
from celery.signals import celeryd_after_setup
from kombu import Connection
from kombu.utils.url import maybe_sanitize_url
from redis.backoff import NoBackoff
from redis.retry import Retry

from agents import liveness
from agents.job import Job
from agents.run import Runtime, get_runtime, live_plan
from workers import execution, watchdog
from workers.app import app
from workers.cancellation import listen
from workers.credentials import require_passwords
from workers.errors import (
    BrokerUnavailable,
    BudgetExceeded,
    CircuitOpen,
    ConfigurationError,
    NoEligibleModel,
)
from workers.observability import metrics, tracing
from workers.redis_pools import is_redis_url
from workers.settings import Settings
from workers.supervise import supervise
from workers.tls import redis_ssl

logger = logging.getLogger(__name__)

EXIT_CONFIG = os.EX_CONFIG  # 78: the catalog or the agents file is wrong
EXIT_UNAVAILABLE = os.EX_UNAVAILABLE  # 69: the broker or the result backend did not answer
EXIT_FAILED = 1  # anything else the warm-up raised
# Redis is asked again this often while a worker waits for it at start.
PROBE_INTERVAL_S = 1.0

# Workers trace (and export) only when the standard OTEL_* variables ask for it.
tracing.connect_worker_signals()


def background_loops(runtime: Runtime) -> dict[str, Callable[[], Awaitable[None]]]:
    """What every worker process runs for its whole life, by name; each is supervised (logged
    and restarted when it fails), so a Redis blip does not end it."""
    settings = runtime.settings
    return {
        # Calls in flight on this process stop when their job is cancelled.
        "cancel listener": partial(listen, str(settings.backend_url), execution.IN_FLIGHT),
        "watchdog": partial(
            watchdog.run,
            app,
            interval_s=settings.watchdog_interval_s,
            ttl_s=settings.result_expires_s,
        ),
    }


# celeryd_after_setup, not worker_init or celeryd_init (also before any consumer): Celery has
# set up logging by then, so the reasons come out in the worker's own format (JSON when asked),
# not through Python's last-resort handler.
@celeryd_after_setup.connect
def _start(**_: Any) -> None:
    runtime = _ready_or_exit()
    # Beating before the consumer starts: from the first message on, what this worker holds
    # is recorded, and given back if it dies.
    liveness.start_heartbeat()
    loop = execution.shared_loop()
    for name, factory in background_loops(runtime).items():
        loop.start(supervise(name, factory))
    logger.info(
        "chordal worker ready: %d models, profile %s",
        len(runtime.catalog.models),
        runtime.catalog.profile,
    )


def _ready_or_exit() -> Runtime:
    try:
        runtime = get_runtime()  # reads the catalog and the agents file
        require_passwords(runtime.settings)
        wait_for_redis(runtime.settings)
        _warm_up(runtime)
        if runtime.settings.metrics_port:
            metrics.serve(runtime.settings.metrics_port)
    except Exception as exc:
        _exit(exc)
    return runtime


def _warm_up(runtime: Runtime) -> None:
    # LiteLLM's price map, the tokenizer and the event loop load now, so the first job is not
    # the slow one.
    job = Job(agent=runtime.agents.names()[0], input="warm up")
    try:
        live_plan(job, runtime, budget_id="warm-up")
    except (NoEligibleModel, BudgetExceeded, CircuitOpen) as exc:
        # The fleet refused the job (open breakers, a spent budget): an answer, not a fault, and
        # all there is to load is loaded by then. A worker must be able to start in an outage.
        logger.info("warm-up job not routed (%s); carrying on", exc)


def _exit(exc: Exception) -> NoReturn:
    if isinstance(exc, ConfigurationError):
        code = EXIT_CONFIG
    elif isinstance(exc, BrokerUnavailable):
        code = EXIT_UNAVAILABLE
    else:
        code = EXIT_FAILED
    logger.critical(
        "chordal worker cannot start; exiting with %d before taking any job: %s",
        code,
        exc,
        exc_info=code == EXIT_FAILED,  # the others' messages say what to fix
    )
    # Signal.send catches every Exception a handler raises, logs it and carries on; a
    # SystemExit passes through, and WorkController.start turns it into a normal stop with this
    # exit code, as it does Celery's own WorkerShutdown. Unlike os._exit, the logs are flushed
    # and the shutdown handlers run.
    raise SystemExit(code) from exc


def wait_for_redis(settings: Settings) -> None:
    """Return once the broker and the result backend answer; raise BrokerUnavailable naming
    the one that did not when ``startup_wait_s`` has passed."""
    deadline = time.monotonic() + settings.startup_wait_s
    # Usually one server under both names: ask it once.
    pending: dict[str, list[str]] = {}
    for role, url in (("broker", settings.broker_url), ("result backend", settings.backend_url)):
        if url:
            pending.setdefault(url, []).append(role)
    warned = False
    while True:
        failures = []
        for url in list(pending):
            left = max(deadline - time.monotonic(), 0.1)
            try:
                _ping(url, settings, timeout_s=min(left, PROBE_INTERVAL_S * 2))
            except Exception as exc:
                roles = " and ".join(pending[url])
                failures.append(f"{roles} at {maybe_sanitize_url(url)}: {exc}")
            else:
                del pending[url]
        if not pending:
            return
        if time.monotonic() >= deadline:
            waited = f"no answer within {settings.startup_wait_s:g} s (CHORDAL_STARTUP_WAIT_S)"
            raise BrokerUnavailable(f"{waited}: {'; '.join(failures)}")
        if not warned:
            logger.warning(
                "waiting up to %g s for %s", settings.startup_wait_s, "; ".join(failures)
            )
            warned = True
        time.sleep(min(PROBE_INTERVAL_S, max(deadline - time.monotonic(), 0)))


def _ping(url: str, settings: Settings, *, timeout_s: float) -> None:
    if is_redis_url(url):
        # No retries inside the client: the caller's loop is the one retry layer, with its bound.
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            **redis_ssl(url, settings),
        )
        try:
            client.ping()
        finally:
            client.close()
        return
    with Connection(url, connect_timeout=timeout_s) as connection:
        connection.ensure_connection(max_retries=0, timeout=timeout_s)
