"""The agent task (``chordal.agent``): one job on the model its router chose.

It admits the call through the fleet's shared state (budgets, rate limits, breaker; see
:mod:`routing.fleet`), makes it, and records the outcome. What happens when that fails:

- a refusal before the call (breaker open, fleet limit reached, budget) or a retryable provider
  error re-routes the job at once to the best other eligible model, across providers and, by the
  ``fallback_tiers`` policy, across tiers; the worker slot never sleeps. A failure of one
  deployment (outage, limit, breaker: a RetryLater) first fails over to another deployment of
  the same model group (:mod:`routing.groups`); a failure of the model (its answer, a budget)
  rules out the whole group;
- when no other model can take it right now, the job is requeued with a countdown (the soonest
  ``Retry-After`` or breaker reopening), at most ``max_requeues`` times;
- ``max_attempts`` bounds the calls actually made; every attempt, refused or failed, is in the
  result;
- a cascade's cheap answer that fails its check escalates to the strong model
  (:mod:`agents.cascade`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject

from agents import cascade, explain
from agents.base import ChordalTask, agent_signature, check_deadline, infrastructure_error, settle
from agents.calls import Outcome, call_model
from agents.job import Job, parse_job
from agents.members import park_member, parked_member
from agents.result import AgentResult, Attempt, CascadeReport
from agents.run import Runtime, escalation, get_runtime, live_plan, plan
from routing.decision import RoutingDecision
from workers.app import app
from workers.errors import (
    AgentFailed,
    BudgetExceeded,
    Cancelled,
    ChordalError,
    CircuitOpen,
    DeadlineExceeded,
    InvalidOutput,
    MalformedMessage,
    NoEligibleModel,
    ProviderUnavailable,
    RetryLater,
    WorkerStopping,
)
from workers.handoff import hand_off
from workers.observability import metrics, tracing
from workers.tiers import AGENT_TASK

logger = logging.getLogger(__name__)

# Errors that say "this model, not this job": the job is worth trying on another model.
RETRY_ELSEWHERE = (RetryLater, InvalidOutput, BudgetExceeded)
LONGEST_WAIT_S = 60.0
BUDGET_WAIT_S = 1.0


@app.task(name=AGENT_TASK, bind=True, base=ChordalTask)
def run_agent(
    self: Task,
    job: dict[str, Any],
    decision: dict[str, Any] | None,
    failed: list[dict[str, Any]],
    *,
    member: bool = False,
    requeues: int = 0,
    cascade: dict[str, Any] | None = None,
) -> Any:
    """Run the agent on the decided model; re-route to another model if that one fails.

    A job pinned to this tier comes straight from its producer, undecided (``decision`` None):
    it is routed here, as the router would have (:func:`route_here`)."""
    runtime = get_runtime()
    parsed = parse_job(job, from_queue=True)
    if decision is None and not member and not failed:
        try:
            chosen = route_here(self, parsed, runtime)
        except ChordalError as exc:
            return settle(self.request.id, parsed, exc, [], member=False)
        if chosen.tier.queue != (self.request.delivery_info or {}).get("routing_key"):
            return hand_off(self, agent_signature(parsed, chosen, [], runtime=runtime))
        attempts: list[Attempt] = []
    else:
        try:
            chosen = RoutingDecision.model_validate(decision)
            attempts = [Attempt.model_validate(item) for item in failed]
        except ValueError as exc:
            msg = f"malformed routing data for {AGENT_TASK}: {exc}"
            raise MalformedMessage(msg, None) from None
    if member and (parked := parked_member(app, self.request.id)) is not None:
        # A member whose call already answered (a redelivery, or a second copy of it sent by a
        # redelivered router) returns that answer: the call is not made and billed twice.
        logger.warning("%s[%s] already answered: returning the recorded result", self.name,
                       self.request.id)  # fmt: skip
        return parked
    run = _Run(self, parsed, chosen, attempts, member=member, requeues=requeues, runtime=runtime)
    if not attempts and not requeues and cascade is None:
        metrics.job_started(agent=parsed.target, tier=str(chosen.tier), tenant=parsed.tenant)
    try:
        check_deadline(parsed)
        outcome = call_model(
            parsed, job_id=run.root, budget_id=run.task_id, decision=chosen, runtime=runtime,
            attempt=self.attempt, recall_first=self.may_have_run(),
            stream=parsed.stream or runtime.agents.get(parsed.target).stream,
        )  # fmt: skip
    except WorkerStopping:
        # The call was cut off by a shutdown: the message goes back, another worker runs it.
        raise Reject("the worker stopped this call on shutdown", requeue=True) from None
    except Cancelled:
        run.finished("cancelled")
        self.revoked()
        raise Ignore() from None
    except RETRY_ELSEWHERE as exc:
        return run.elsewhere(exc, called=_was_called(exc))
    except Exception as exc:
        if infrastructure_error(exc):
            raise  # Redis or the broker, not the job: ChordalTask runs it again
        return run.fail(exc)
    return run.answered(outcome, cascade_state=cascade)


def route_here(task: Task, job: Job, runtime: Runtime) -> RoutingDecision:
    """What the router does for a job, done by the tier worker that took it: the decision with
    the fleet's live state, recorded for ``chordal explain``, the job marked ROUTED.

    A copy that may have run before keeps the first copy's decision: its kept answer, if any,
    came from that model."""
    check_deadline(job)
    if task.may_have_run() and (decided := explain.first(app, task.request.id)) is not None:
        return decided
    with tracing.routing_span(job.target) as span:
        decision = live_plan(job, runtime, budget_id=task.request.id)
        tracing.record_route(span, decision)
    explain.record(app, task.request.id, decision, ttl_s=runtime.settings.result_expires_s)
    task.update_state(state="ROUTED", meta={"model": decision.model, "tier": decision.tier})
    return decision


def _was_called(error: Exception) -> bool:
    # Admission refuses with these before any request is sent; a provider's 429 is RateLimited
    # with a cause from LiteLLM.
    if isinstance(error, CircuitOpen | BudgetExceeded):
        return False
    return error.__cause__ is not None or isinstance(error, InvalidOutput)


class _Run:
    """One execution of the agent task: its job, decision and attempts so far."""

    def __init__(
        self,
        task: Task,
        job: Job,
        decision: RoutingDecision,
        attempts: list[Attempt],
        *,
        member: bool,
        requeues: int,
        runtime: Runtime,
    ) -> None:
        self.task, self.job, self.decision, self.attempts = task, job, decision, attempts
        self.member, self.requeues, self.runtime = member, requeues, runtime
        self.task_id = str(task.request.id)
        self.root = str(task.request.root_id or task.request.id)
        self.started = time.perf_counter()

    def finished(self, state: metrics.JobState) -> None:
        """Count the job as ended in ``state``."""
        metrics.job_finished(
            agent=self.job.target, tier=str(self.decision.tier), tenant=self.job.tenant,
            state=state, duration_s=time.perf_counter() - self.started,
        )  # fmt: skip

    def fail(self, error: Exception) -> Any:
        """End the job with ``error`` (a member returns it as a failure record)."""
        self.finished("timed_out" if isinstance(error, DeadlineExceeded) else "failed")
        return settle(self.task_id, self.job, error, self.attempts, member=self.member)

    def elsewhere(self, error: Exception, *, called: bool, cost_usd: float = 0.0) -> Any:
        """Record the failed attempt, then re-route, requeue or give up."""
        self.attempts.append(
            Attempt(
                model=self.decision.model,
                tier=self.decision.tier,
                error_kind=type(error).__name__,
                error=str(error),
                deployment=self.decision.deployment,
                # Only a deployment's own trouble leaves the rest of its group to try.
                scope="deployment" if isinstance(error, RetryLater) else "model",
                called=called,
                cost_usd=cost_usd,
                round=self.requeues,
            )
        )
        try:
            follow_up = self._follow_up(error)
        except ChordalError as final:
            return self.fail(final)
        return hand_off(self.task, follow_up)

    def _follow_up(self, last: Exception) -> Any:
        runtime = self.runtime
        tried = ", ".join(f"{_tried(a)} ({a.error_kind})" for a in self.attempts)
        check_deadline(self.job)
        if sum(a.called for a in self.attempts) >= runtime.settings.max_attempts:
            raise _gave_up(f"{len(self.attempts)} attempts failed: {tried}", last)
        # Models that failed a call stay excluded; refusals only for this round.
        exclude = _excluded(a for a in self.attempts if a.called or a.round == self.requeues)
        # A deployment's own failure: the rest of its group first, then other models.
        prefer = self.decision.model if isinstance(last, RetryLater) else None
        try:
            decision = live_plan(
                self.job, runtime, budget_id=self.task_id, exclude=exclude, fallback=True,
                prefer=prefer,
            )  # fmt: skip
        except (NoEligibleModel, CircuitOpen) as nothing:
            return self._requeue(last, nothing, tried)
        explain.record(app, self.task_id, decision, ttl_s=runtime.settings.result_expires_s)
        fell_back = any(note.startswith("fell back") for note in decision.notes)
        metrics.reroute(reason_kind="fallback" if fell_back else "reroute")
        logger.warning("re-routing job after %s: trying %s", tried, decision.model)
        return agent_signature(
            self.job, decision, self.attempts, runtime=runtime, member=self.member,
            requeues=self.requeues,
        )  # fmt: skip

    def _requeue(self, last: Exception, nothing: ChordalError, tried: str) -> Any:
        # Nothing can take the job right now: wait for the soonest model to free up, in the
        # queue (an ETA message), not in a worker slot.
        waits = [
            e.retry_after for e in (last, nothing) if isinstance(e, RetryLater) and e.retry_after
        ]
        if not isinstance(last, RetryLater):
            raise _gave_up(f"no other eligible model after: {tried}", last)
        return self._wait(last, tried, wait=min(max(min(waits, default=1.0), 0.5), LONGEST_WAIT_S))

    def _wait(self, last: Exception, tried: str, *, wait: float) -> Any:
        if self.requeues >= self.runtime.settings.max_requeues:
            raise _gave_up(f"gave up waiting after {self.requeues} waits: {tried}", last)
        left = self.job.seconds_left(time.time())
        if left is not None and left <= wait:
            raise _gave_up(f"no model frees up before the deadline after: {tried}", last)
        exclude = _excluded(a for a in self.attempts if a.called)
        try:
            decision = live_plan(self.job, self.runtime, budget_id=self.task_id, exclude=exclude)
        except ChordalError:  # everything is busy now; admission decides when the wait is over
            decision = plan(self.job, self.runtime, exclude=exclude)
        explain.record(app, self.task_id, decision, ttl_s=self.runtime.settings.result_expires_s)
        metrics.reroute(reason_kind="requeue")
        logger.warning("no model free after %s: requeued for %.1f s", tried, wait)
        return agent_signature(
            self.job, decision, self.attempts, runtime=self.runtime, member=self.member,
            requeues=self.requeues + 1,
        ).set(countdown=wait)  # fmt: skip

    def answered(self, outcome: Outcome, *, cascade_state: dict[str, Any] | None) -> Any:
        """Check the answer (cascade, schema) and return the result, or try elsewhere."""
        done, chosen = outcome.completion, self.decision
        report: CascadeReport | None = None
        extra = 0.0
        if chosen.cascade:
            verdict = cascade.check(
                self.job, outcome, job_id=self.root, budget_id=self.task_id, runtime=self.runtime,
                attempt=self.task.attempt, recall_first=self.task.may_have_run(),
            )  # fmt: skip
            extra = verdict.cost_usd
            if not verdict.passed:
                return self._escalate(
                    verdict.reason or "", done.cost_usd + extra, deployment=outcome.deployment
                )
            report = cascade.kept(
                first_model=chosen.model, strong_model=chosen.cascade[0], completion=done,
                cost_usd=done.cost_usd + extra, runtime=self.runtime,
            )  # fmt: skip
        elif outcome.invalid is not None:
            return self.elsewhere(
                InvalidOutput(outcome.invalid), called=True, cost_usd=done.cost_usd
            )
        spent = done.cost_usd + extra + sum(a.cost_usd for a in self.attempts)
        if cascade_state is not None:
            report = cascade.escalated(cascade_state, completion=done, cost_usd=spent)
        result = AgentResult(
            job_id=self.task_id,
            agent=self.job.target,
            tenant=self.job.tenant,
            metadata=dict(self.job.metadata),
            output=done.content,
            structured=outcome.structured,
            model=chosen.model,
            # Whoever answered: a kept answer's own deployment (routing.groups).
            deployment=outcome.deployment or chosen.deployment,
            tier=chosen.tier,
            tokens_in=done.prompt_tokens,
            tokens_out=done.completion_tokens,
            cost_usd=spent,
            latency_s=round(done.latency_s, 4),
            attempts=sum(a.called for a in self.attempts) + 1,
            failed_attempts=self.attempts,
            decision=chosen,
            cascade=report,
        )
        self.finished("succeeded")
        if self.member:
            return park_member(app, result, ttl_s=self.runtime.settings.result_expires_s)
        return result.as_json()

    def _escalate(self, reason: str, cost_usd: float, *, deployment: str | None) -> Any:
        chosen = self.decision
        self.attempts.append(
            Attempt(
                model=chosen.model,
                tier=chosen.tier,
                deployment=deployment,
                error_kind="Escalated",
                error=reason,
                cost_usd=cost_usd,
                round=self.requeues,
            )
        )
        try:
            strong = escalation(self.job, chosen, self.runtime)
        except ChordalError as final:
            return self.fail(final)
        metrics.reroute(reason_kind="escalate")
        explain.record(app, self.task_id, strong, ttl_s=self.runtime.settings.result_expires_s)
        state = {"first_model": chosen.model, "strong_model": strong.model, "reason": reason}
        follow_up = agent_signature(
            self.job, strong, self.attempts, runtime=self.runtime, member=self.member,
            requeues=self.requeues, cascade=state,
        )  # fmt: skip
        return hand_off(self.task, follow_up)


def _excluded(attempts: Iterable[Attempt]) -> frozenset[str]:
    # A failure of one deployment rules out that deployment; any other, its whole model group.
    return frozenset(
        a.deployment if a.scope == "deployment" and a.deployment else a.model for a in attempts
    )


def _tried(attempt: Attempt) -> str:
    # "model" alone where the model has one deployment (its key is its name).
    shown = attempt.deployment
    return attempt.model if shown in (None, attempt.model) else f"{attempt.model} [{shown}]"


def _gave_up(message: str, last: Exception) -> Exception:
    if isinstance(last, BudgetExceeded):
        return last
    if isinstance(last, RetryLater):
        return ProviderUnavailable(message, last.retry_after)
    return AgentFailed(message)
