"""Locust users for Chordal: jobs through the HTTP gateway, and through the Celery producer.

Both users report each job's end-to-end latency (submit to result) as a request entry of its own,
beside the gateway's HTTP requests, because what a caller waits for is the job, not one HTTP
round trip. ``tests/load/run.py`` runs this file against a private stack; against any other
Chordal: ``locust -f tests/load/locustfile.py --host GATEWAY_URL`` with ``CHORDAL_LOAD_API_KEY``
(a gateway key) and Chordal's own ``CHORDAL_*`` settings (``CHORDAL_BROKER_URL``) set.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
from typing import Any

from locust import HttpUser, User, between, events, task
from locust.stats import CSV_STATS_INTERVAL_SEC

from agents.client import Client
from workers.settings import Settings

# Short, varied jobs on three agents, so the router spreads them over the tiers.
JOBS: tuple[dict[str, Any], ...] = (
    {
        "agent": "summarizer",
        "input": "Celery acknowledges a task after it ran when acks_late is on. If the worker "
        "dies mid-task, the broker delivers the message again, so the task must be idempotent.",
    },
    {
        "agent": "researcher",
        "input": "What limits how many LLM calls one worker process can keep in flight?",
    },
    {
        "agent": "analyst",
        "input": "Compare routing every job to the cheapest model with routing by complexity.",
    },
)
# Both users poll a job's state this often (Client.wait's default), so their end-to-end
# latencies carry the same granularity and can be compared.
POLL_S = 0.1
# A job still running after this counts as failed: far above any scaled simulator latency.
JOB_TIMEOUT_S = 60.0
WAIT = between(0.5, 1.5)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _settle(**_kwargs: Any) -> None:
    # Locust rewrites its stats CSV once a second and closes it after this event without a last
    # write: jobs that ended in the final second would be in the printed table but not the CSV.
    time.sleep(CSV_STATS_INTERVAL_SEC + 0.5)
    # Celery's AsyncResult.__del__ needs a live greenlet; collected at interpreter exit, it
    # prints "greenlet is being finalized" tracebacks.
    gc.collect()


events.quit.add_listener(_settle)  # type: ignore[no-untyped-call]  # Locust leaves it untyped


class GatewayUser(HttpUser):
    """A tenant's program: ``POST /v1/jobs``, then ``GET`` its status URL until done."""

    wait_time = WAIT

    def on_start(self) -> None:
        key = os.environ.get("CHORDAL_LOAD_API_KEY")
        if not key:
            # Raised, not skipped: Locust counts it as an error and exits non-zero.
            raise RuntimeError("set CHORDAL_LOAD_API_KEY to a gateway API key")
        self.client.headers["Authorization"] = f"Bearer {key}"

    @task
    def job_over_http(self) -> None:
        started = time.perf_counter()
        posted = self.client.post("/v1/jobs", json=random.choice(JOBS), name="/v1/jobs")
        if posted.status_code != 202:
            # Locust already counted the refused POST; no job exists to time.
            return
        status_url = posted.json()["status_url"]
        error: Exception | None = None
        body: dict[str, Any] = {}
        deadline = started + JOB_TIMEOUT_S
        while True:
            # One name for every job's status URL, so the polls group into one row.
            polled = self.client.get(status_url, name="/v1/jobs/[id]")
            if not polled.ok:
                error = RuntimeError(f"status poll answered {polled.status_code}")
                break
            body = polled.json()
            if body["done"]:
                if body["state"] != "SUCCESS":
                    error = RuntimeError(f"job ended {body['state']}: {body['error']}")
                break
            if time.perf_counter() >= deadline:
                error = TimeoutError(f"job still {body['state']} after {JOB_TIMEOUT_S} s")
                break
            time.sleep(POLL_S)
        self.environment.events.request.fire(
            request_type="JOB",
            name="gateway job",
            response_time=_elapsed_ms(started),
            response_length=len(json.dumps(body.get("result") or {})),
            exception=error,
            context={},
        )


class ProducerUser(User):
    """A Python producer: ``Client.submit`` to the broker, then ``Client.wait`` for the result.

    Each user has its own client (its own Celery app and connections), as separate producer
    processes would.
    """

    wait_time = WAIT

    def on_start(self) -> None:
        self.producer = Client(settings=Settings())

    def on_stop(self) -> None:
        self.producer.app.close()

    @task
    def job_over_celery(self) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        result: dict[str, Any] = {}
        try:
            job_id = self.producer.submit(random.choice(JOBS))
            result = self.producer.wait(job_id, timeout=JOB_TIMEOUT_S, poll_s=POLL_S)
        except Exception as exc:  # any failure of the job is a failed request in the report
            error = exc
        self.environment.events.request.fire(
            request_type="CELERY",
            name="producer job",
            response_time=_elapsed_ms(started),
            response_length=len(json.dumps(result)),
            exception=error,
            context={},
        )
