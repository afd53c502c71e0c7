"""Celery tasks: the router (``chordal.route``) and the agent (``chordal.agent``).

Both are thin: decode the message, call :mod:`agents.run`, encode the result. The router replaces
itself with the agent task on the chosen tier's queue (``Task.replace``), so the job's id resolves
to the agent's result; for a team job it replaces itself with the team's canvas
(:mod:`agents.team_tasks`). A failed call on a retryable error re-routes the job, excluding the
models already tried, up to ``max_attempts`` calls. As a team *member* (``member=True``) both
tasks return a failure as a :class:`~agents.result.MemberFailure` instead of raising it.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

from celery import Task, states
from celery.exceptions import Ignore
from celery.signals import worker_init

from agents.job import Job, parse_job
from agents.members import park_member, parked_member
from agents.result import AgentResult, Attempt, MemberFailure
from agents.run import Runtime, execute, get_runtime, plan
from routing.decision import RoutingDecision
from workers import execution, watchdog
from workers.app import app
from workers.cancellation import is_cancelled, listen
from workers.deadletter import dead_letter
from workers.errors import (
    AgentFailed,
    Cancelled,
    ChordalError,
    DeadlineExceeded,
    InvalidOutput,
    MalformedMessage,
    NoEligibleModel,
    ProviderUnavailable,
    RetryLater,
)
from workers.tiers import AGENT_TASK, ROUTE_TASK, ROUTER_QUEUE, transport_priority

logger = logging.getLogger(__name__)

# Errors that say "this model, not this job": the job is worth trying on another model.
RETRY_ELSEWHERE = (RetryLater, InvalidOutput)


class ChordalTask(Task):  # type: ignore[misc]
    """Base for Chordal's tasks: runs each job once, dead-letters messages that are not jobs."""

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


@worker_init.connect
def _warm_up(**_: Any) -> None:
    # Load the catalog, LiteLLM's price map and the tokenizer, and start the event loop before
    # the first message arrives, so the first job is not the slow one.
    runtime = get_runtime()
    plan(Job(agent=runtime.agents.names()[0], input="warm up"), runtime)
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
) -> Any:
    """The agent task for ``job`` on the decided tier's queue."""
    return app.signature(
        AGENT_TASK,
        args=(job.model_dump(mode="json"), decision.model_dump(mode="json")),
        kwargs={"failed": [a.model_dump(mode="json") for a in failed], "member": member},
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
    if parsed.team is not None:
        from agents.team_tasks import team_canvas

        self.update_state(state="ROUTED", meta={"team": parsed.team})
        root = self.request.root_id or self.request.id
        try:
            canvas = team_canvas(parsed, runtime, root=root, team_id=self.request.id, member=member)
        except ChordalError as exc:
            return settle(self.request.id, parsed, exc, [], member=member)
        return self.replace(canvas)
    try:
        _check_deadline(parsed)
        decision = plan(parsed, runtime)
    except ChordalError as exc:
        return settle(self.request.id, parsed, exc, [], member=member)
    self.update_state(state="ROUTED", meta={"model": decision.model, "tier": decision.tier})
    return self.replace(agent_signature(parsed, decision, [], runtime=runtime, member=member))


@app.task(name=AGENT_TASK, bind=True, base=ChordalTask)
def run_agent(
    self: Task,
    job: dict[str, Any],
    decision: dict[str, Any],
    failed: list[dict[str, Any]],
    member: bool = False,
) -> Any:
    """Run the agent on the decided model; re-route to another model if that one fails."""
    runtime = get_runtime()
    parsed = parse_job(job, from_queue=True)
    try:
        chosen = RoutingDecision.model_validate(decision)
        attempts = [Attempt.model_validate(item) for item in failed]
    except ValueError as exc:
        raise MalformedMessage(f"malformed routing data for {AGENT_TASK}: {exc}", None) from None
    if member and (parked := parked_member(app, self.request.id)) is not None:
        # A member whose call already answered (a redelivery, or a second copy of it sent by a
        # redelivered router) returns that answer: the call is not made and billed twice.
        logger.warning("%s[%s] already answered: returning the recorded result", self.name,
                       self.request.id)  # fmt: skip
        return parked
    try:
        _check_deadline(parsed)
        root = self.request.root_id or self.request.id
        outcome = execution.run(
            execute(parsed, job_id=root, decision=chosen, runtime=runtime), job_id=root
        )
    except Cancelled:
        raise Ignore() from None
    except RETRY_ELSEWHERE as exc:
        attempts.append(
            Attempt(
                model=chosen.model, tier=chosen.tier, error_kind=type(exc).__name__, error=str(exc)
            )
        )
        try:
            follow_up = _next_attempt(parsed, attempts, exc, runtime=runtime, member=member)
        except ChordalError as final:
            return settle(self.request.id, parsed, final, attempts, member=member)
        return self.replace(follow_up)
    except Exception as exc:
        return settle(self.request.id, parsed, exc, attempts, member=member)
    completion = outcome.completion
    result = AgentResult(
        job_id=self.request.id,
        agent=parsed.target,
        tenant=parsed.tenant,
        metadata=dict(parsed.metadata),
        output=completion.content,
        structured=outcome.structured,
        model=chosen.model,
        tier=chosen.tier,
        tokens_in=completion.prompt_tokens,
        tokens_out=completion.completion_tokens,
        cost_usd=completion.cost_usd,
        latency_s=round(completion.latency_s, 4),
        attempts=len(attempts) + 1,
        failed_attempts=attempts,
        decision=chosen,
    )
    if member:
        return park_member(app, result, ttl_s=runtime.settings.result_expires_s)
    return result.model_dump(mode="json")


def _next_attempt(
    job: Job, attempts: list[Attempt], last: Exception, *, runtime: Runtime, member: bool
) -> Any:
    tried = ", ".join(f"{a.model} ({a.error_kind})" for a in attempts)
    _check_deadline(job)
    if len(attempts) >= runtime.settings.max_attempts:
        raise _gave_up(f"{len(attempts)} attempts failed: {tried}", last)
    try:
        decision = plan(job, runtime, exclude=frozenset(a.model for a in attempts))
    except NoEligibleModel:
        raise _gave_up(f"no other eligible model after: {tried}", last) from None
    logger.warning("re-routing job after %s: trying %s", tried, decision.model)
    return agent_signature(job, decision, attempts, runtime=runtime, member=member)


def _check_deadline(job: Job) -> None:
    left = job.seconds_left(time.time())
    if left is not None and left <= 0:
        raise DeadlineExceeded(f"deadline passed {-left:.1f} s ago")


def _gave_up(message: str, last: Exception) -> Exception:
    if isinstance(last, RetryLater):
        return ProviderUnavailable(message, last.retry_after)
    return AgentFailed(message)
