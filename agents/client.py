"""The producer side: submit jobs, read their state, wait for results.

This module imports neither LiteLLM nor the routing code, so a web request handler can enqueue a
job in microseconds. Producers in another codebase need not import Chordal at all: a job is one
JSON object sent by task name (see the README, "Submitting from another codebase")::

    celery_app.send_task("chordal.route", args=[{"agent": "summarizer", "input": "..."}],
                         queue="router")
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from agents.job import Job, parse_job
from agents.registry import AgentRegistry
from workers import watchdog
from workers.cancellation import request_cancel
from workers.errors import Cancelled, ChordalError
from workers.observability import tracing
from workers.settings import Settings, get_settings
from workers.tiers import ROUTE_TASK, ROUTER_QUEUE, transport_priority

IDEMPOTENCY_PREFIX = "chordal:idempotency:"
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


@dataclass(frozen=True)
class JobStatus:
    """Where a job is: Celery's state plus what Chordal knows at that stage."""

    job_id: str
    state: str
    model: str | None = None
    tier: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def done(self) -> bool:
        """True once the job succeeded, failed or was revoked."""
        return self.state in TERMINAL_STATES


class Client:
    """Submits jobs to a Chordal deployment through its Celery app."""

    def __init__(
        self,
        app: Celery | None = None,
        *,
        settings: Settings | None = None,
        agents: AgentRegistry | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        if app is None:
            from workers.app import create_app

            app = create_app(self.settings)
        self.app = app
        self.agents = agents or AgentRegistry.load(self.settings.agents_path)
        # Traced only when the standard OTEL_* variables ask for it (then a team job is one
        # trace from this submit to its aggregator).
        tracing.setup_tracing(service_name="chordal-producer")

    def submit(self, job: Job | Mapping[str, Any]) -> str:
        """Validate and enqueue ``job``; returns its id. Raises InvalidJob naming the field.

        A job with an ``idempotency_key`` already seen for its tenant is not enqueued again:
        the first job's id is returned.
        """
        parsed = parse_job(dict(job) if isinstance(job, Mapping) else job)
        if parsed.team is not None:
            self.agents.get_team(parsed.team)
        else:
            self.agents.get(parsed.target)
        job_id = str(uuid.uuid4())
        if parsed.idempotency_key is not None:
            key = f"{IDEMPOTENCY_PREFIX}{parsed.tenant}:{parsed.idempotency_key}"
            client = self.app.backend.client
            if not client.set(key, job_id, nx=True, ex=self.settings.idempotency_ttl_s):
                existing = client.get(key)
                return existing.decode() if isinstance(existing, bytes) else str(existing)
        if parsed.deadline_at is not None:
            watchdog.watch(
                self.app, job_id, deadline_at=parsed.deadline_at,
                grace_s=self.settings.watchdog_grace_s,
            )  # fmt: skip
        kind = "team" if parsed.team is not None else "agent"
        with tracing.submit_span(kind, parsed.target, job_id=job_id):
            self.app.send_task(
                ROUTE_TASK,
                args=[parsed.model_dump(mode="json")],
                task_id=job_id,
                queue=ROUTER_QUEUE,
                priority=transport_priority(
                    parsed.priority, broker_url=str(self.app.conf.broker_url)
                ),
            )
        return job_id

    def tree(self, job_id: str) -> list[dict[str, Any]]:
        """A team job's members (planner, members, rounds, aggregator) and where each is."""
        from agents import tree

        return [node.as_dict() for node in tree.read(self.app, job_id)]

    def cancel(self, job_id: str) -> None:
        """Cancel ``job_id`` and everything it started (members, rounds, the aggregator).

        Nothing of the job starts after this returns; calls in flight stop at their next
        ``await``. The job's state becomes REVOKED and :meth:`wait` raises Cancelled.
        """
        request_cancel(self.app.backend.client, job_id, ttl_s=self.settings.result_expires_s)
        self.app.backend.mark_as_revoked(job_id, reason="cancelled")

    def status(self, job_id: str) -> JobStatus:
        """The job's current state, with the model and tier once routed."""
        result = AsyncResult(job_id, app=self.app)
        state = result.state
        info = result.info
        if state == "SUCCESS":
            return JobStatus(
                job_id, state, model=info.get("model"), tier=info.get("tier"), result=info
            )
        if state == "REVOKED":
            return JobStatus(job_id, state, error="cancelled", error_type="Cancelled")
        if state == "FAILURE":
            return JobStatus(job_id, state, error=str(info), error_type=type(info).__name__)
        if isinstance(info, dict):
            return JobStatus(job_id, state, model=info.get("model"), tier=info.get("tier"))
        return JobStatus(job_id, state)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 300.0,
        poll_s: float = 0.1,
        on_progress: Callable[[JobStatus], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the job ends; return its result or raise its error.

        Raises the job's ChordalError (rebuilt from the result backend), or TimeoutError.
        """
        deadline = time.monotonic() + timeout
        last_state = None
        while True:
            status = self.status(job_id)
            if on_progress is not None and status.state != last_state:
                on_progress(status)
                last_state = status.state
            if status.done:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {status.state} after {timeout} s")
            time.sleep(poll_s)
        result = AsyncResult(job_id, app=self.app)
        if status.state == "SUCCESS":
            return dict(status.result or {})
        if status.state == "REVOKED":
            raise Cancelled(f"job {job_id} was cancelled")
        error = result.info
        if isinstance(error, BaseException):
            raise error
        raise ChordalError(f"job {job_id} ended {status.state}: {error}")
