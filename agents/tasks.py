"""Celery tasks: the router (``chordal.route``) and the agent (``chordal.agent``).

Both are thin: decode the message, call :mod:`agents.run`, encode the result. The router hands
the job's id to the agent task on the chosen tier's queue (:func:`~workers.handoff.hand_off`,
``Task.replace`` without its exception where no chord or chain needs it), so the job's id
resolves to the agent's result; for a team job it replaces itself with the team's canvas
(:mod:`agents.team_tasks`). A failed call on a retryable error re-routes the job, excluding the
models already tried, up to ``max_attempts`` calls. As a team *member* (``member=True``) both
tasks return a failure as a :class:`~agents.result.MemberFailure` instead of raising it.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

from celery import Task, chain, states
from celery.exceptions import Ignore
from celery.signals import worker_init

from agents import explain
from agents.job import COMPLEXITY_NAMES, Job, parse_job
from agents.result import Attempt, MemberFailure
from agents.run import Runtime, get_runtime, live_plan
from routing.complexity import estimate_complexity
from routing.decision import RoutingDecision
from workers import execution, metrics, tracing, watchdog
from workers.app import app
from workers.cancellation import is_cancelled, listen
from workers.deadletter import dead_letter
from workers.errors import (
    ChordalError,
    DeadlineExceeded,
    MalformedMessage,
)
from workers.handoff import hand_off
from workers.tiers import (
    AGENT_TASK,
    CLASSIFIED_TASK,
    ROUTE_TASK,
    ROUTER_QUEUE,
    transport_priority,
)

CLASSIFIER = "classifier"

logger = logging.getLogger(__name__)


class ChordalTask(Task):  # type: ignore[misc]
    """Base for Chordal's tasks: runs each job once, dead-letters messages that are not jobs."""

    # Task events (Flower) carry a redacted preview of the result, never the whole answer.
    Request = "workers.logs:RedactingRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # With acks_late, a worker that dies after a task finished but before the ack gets the
        # message back. Running it again would call (and bill) the model twice and, for a team
        # member, add a second entry to the chord's join.
        redelivered = (self.request.delivery_info or {}).get("redelivered")
        if redelivered:
            recorded = self.AsyncResult(self.request.id)
            if recorded.state == states.SUCCESS:
                return self._recorded(recorded.result)
        root = self.request.root_id or self.request.id
        if is_cancelled(self.app.backend.client, root):
            logger.info("%s[%s] not run: job %s was cancelled", self.name, self.request.id, root)
            raise Ignore()
        try:
            inspect.signature(self.run).bind(*args, **kwargs)
        except TypeError as exc:
            raise MalformedMessage(f"malformed message for {self.name}: {exc}", None) from None
        return super().__call__(*args, **kwargs)

    def _recorded(self, result: Any) -> Any:
        # A chord member may have died after storing its result but before the join counted
        # it: returning the recorded result joins it (Celery 5.7's join ignores a task id it
        # has already counted). Anything else is done; returning would start its chain twice.
        if self.request.chord and not self.request.chain:
            logger.warning("%s[%s] redelivered: rejoining its recorded result", self.name,
                           self.request.id)  # fmt: skip
            return result
        logger.warning("%s[%s] redelivered after it succeeded: not run again", self.name,
                       self.request.id)  # fmt: skip
        raise Ignore()

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Keep a message no code can process, so an operator can inspect and replay it."""
        if isinstance(exc, MalformedMessage):
            dead_letter(
                self.app,
                reason=str(exc),
                queue=(self.request.delivery_info or {}).get("routing_key"),
                task=self.name,
                task_id=task_id,
                body={"args": args, "kwargs": kwargs},
            )


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


def agent_signature(
    job: Job,
    decision: RoutingDecision,
    failed: list[Attempt],
    *,
    runtime: Runtime,
    member: bool = False,
    requeues: int = 0,
    cascade: dict[str, Any] | None = None,
) -> Any:
    """The agent task for ``job`` on the decided tier's queue."""
    kwargs: dict[str, Any] = {"failed": [a.model_dump(mode="json") for a in failed]}
    kwargs |= {"member": member, "requeues": requeues, "cascade": cascade}
    return app.signature(
        AGENT_TASK,
        args=(job.model_dump(mode="json"), decision.model_dump(mode="json")),
        kwargs=kwargs,
        queue=decision.tier.queue,
        priority=_priority(job, runtime),
    )


def route_signature(job: Job, *, runtime: Runtime, member: bool = False) -> Any:
    """The router task for ``job``; as a team ``member`` it returns failures as data."""
    return app.signature(
        ROUTE_TASK,
        args=(job.model_dump(mode="json"),),
        kwargs={"member": member},
        queue=ROUTER_QUEUE,
        priority=_priority(job, runtime),
    )


def _priority(job: Job, runtime: Runtime) -> int:
    return transport_priority(job.priority, broker_url=runtime.settings.broker_url or "")


def check_deadline(job: Job) -> None:
    """Raise DeadlineExceeded if ``job``'s deadline has passed."""
    left = job.seconds_left(time.time())
    if left is not None and left <= 0:
        raise DeadlineExceeded(f"deadline passed {-left:.1f} s ago")


def settle(
    task_id: str, job: Job, error: Exception, attempts: list[Attempt], *, member: bool
) -> dict[str, Any]:
    """A team member's failure becomes data for the aggregator; anything else is raised."""
    if not member:
        raise error
    logger.warning("team member %s (%s) failed: %s", task_id, job.target, error)
    return MemberFailure(
        status="timed_out" if isinstance(error, DeadlineExceeded) else "failed",
        job_id=task_id,
        agent=job.target,
        metadata=dict(job.metadata),
        error_kind=type(error).__name__,
        error=str(error),
        failed_attempts=attempts,
    ).model_dump(mode="json")


@app.task(name=ROUTE_TASK, bind=True, base=ChordalTask)
def route(self: Task, job: dict[str, Any], member: bool = False) -> Any:
    """Choose the model for a job and hand it to that tier's agent task (or start its team)."""
    runtime = get_runtime()
    parsed = parse_job(job, from_queue=True)
    root = self.request.root_id or self.request.id
    if parsed.team is not None:
        from agents.team_tasks import team_canvas

        self.update_state(state="ROUTED", meta={"team": parsed.team})
        try:
            canvas = team_canvas(parsed, runtime, root=root, team_id=self.request.id, member=member)
        except ChordalError as exc:
            return settle(self.request.id, parsed, exc, [], member=member)
        return self.replace(canvas)
    if parsed.complexity == "classify":
        return self.replace(_classify_first(parsed, runtime, member=member))
    try:
        check_deadline(parsed)
        with tracing.routing_span(parsed.target) as span:
            decision = live_plan(parsed, runtime, budget_id=self.request.id)
            tracing.record_route(span, decision)
    except ChordalError as exc:
        return settle(self.request.id, parsed, exc, [], member=member)
    explain.record(app, self.request.id, decision, ttl_s=runtime.settings.result_expires_s)
    self.update_state(state="ROUTED", meta={"model": decision.model, "tier": decision.tier})
    return hand_off(self, agent_signature(parsed, decision, [], runtime=runtime, member=member))


def _classify_first(job: Job, runtime: Runtime, *, member: bool) -> Any:
    # The classifier agent labels the job's complexity on a cheap model; the job is then routed
    # with that label (chordal.route.classified), never blocking a router slot on the call.
    label = Job(
        agent=CLASSIFIER,
        input=(
            "Label how complex this task is for a language model: low, medium or high.\n\n"
            f"Task:\n{job.input}"
        ),
        complexity=0.1,
        tenant=job.tenant,
        priority=job.priority,
        deadline_at=job.deadline_at,
        metadata={**job.metadata, "classifies": True},
    )
    then = app.signature(
        CLASSIFIED_TASK,
        kwargs={"job": job.model_dump(mode="json"), "member": member},
        queue=ROUTER_QUEUE,
        priority=_priority(job, runtime),
    )
    return chain(route_signature(label, runtime=runtime), then)


@app.task(name=CLASSIFIED_TASK, bind=True, base=ChordalTask)
def route_classified(self: Task, label: dict[str, Any], job: dict[str, Any], member: bool) -> Any:
    """Route a ``classify`` job with the complexity its classifier gave (else the estimate)."""
    runtime = get_runtime()
    parsed = parse_job(job, from_queue=True)
    said = str((label.get("structured") or {}).get("label", "")).lower()
    named = next((n for n in COMPLEXITY_NAMES if n in said), None)
    complexity = COMPLEXITY_NAMES[named] if named else estimate_complexity(parsed.input)
    classified = parsed.model_copy(update={"complexity": complexity})
    return hand_off(self, route_signature(classified, runtime=runtime, member=member))
