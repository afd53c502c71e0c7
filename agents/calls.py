"""One LLM call of a job, as plain functions: make it, check its answer, keep it, record it.

The agent task (:mod:`agents.agent_task`) and the cascade's critic (:mod:`agents.cascade`) call
:func:`call_model`; :mod:`agents.run` chose the model.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from agents import answers
from agents.job import Job
from agents.run import Runtime, build_messages
from agents.tokens import TokenEvents
from routing.decision import RoutingDecision
from routing.fleet import UNCERTAIN_ERRORS, Admission, Fleet
from routing.groups import decided
from routing.llm import Completion, TokenSink, complete
from workers import execution, recovery
from workers.errors import Cancelled, DeadlineExceeded, InvalidOutput
from workers.observability import metrics, tracing
from workers.redis_retry import aretry_redis, retry_redis

logger = logging.getLogger(__name__)

BOUND_SLACK_S = 1.0


@dataclass(frozen=True)
class Outcome:
    """A call that answered, with its structured answer or why that answer is unusable."""

    completion: Completion
    structured: dict[str, Any] | None
    invalid: str | None = None
    # The deployment that answered: the one its admission was charged against.
    deployment: str | None = None


async def execute(
    job: Job,
    *,
    job_id: str,
    decision: RoutingDecision,
    runtime: Runtime,
    attempt: str | None = None,
    sent: threading.Event | None = None,
    keep: Callable[[Completion], Awaitable[None]] | None = None,
    tokens: TokenSink | None = None,
) -> Completion:
    """Call the decided model for ``job``; raises RetryLater or AgentFailed. ``sent`` is set
    just before the request may leave: from then on its outcome can be unknown. ``keep`` runs
    on the loop the moment the answer is read (see :mod:`agents.answers`)."""
    spec = runtime.agents.get(job.target)
    model = decided(runtime.catalog, decision)
    # The deployment's own timeout (its entry's, or the catalog's request_timeout) replaces the
    # default; the job's limits still bound it.
    own = model.timeout_s or runtime.settings.llm_timeout_s
    limits = [own, job.max_latency_s, job.seconds_left(time.time())]
    timeout = max(0.001, min(limit for limit in limits if limit is not None))
    headers = {"X-Chordal-Job": job_id}
    if attempt is not None:
        headers["X-Chordal-Attempt"] = attempt
    if sent is not None:
        sent.set()
    done = await complete(
        model,
        build_messages(spec, job),
        max_tokens=decision.max_output_tokens,
        timeout=timeout,
        response_format=spec.response_format(),
        headers=headers,
        tokens=tokens,
    )
    if keep is not None:
        await keep(done)
    return done


def read_answer(job: Job, completion: Completion, runtime: Runtime) -> Outcome:
    """The answer checked against the agent's output schema (in the calling thread: schema
    validation is CPU work that must not hold the event loop every call shares)."""
    spec = runtime.agents.get(job.target)
    try:
        structured = spec.parse_output(completion.content)
    except InvalidOutput as exc:
        return Outcome(completion=completion, structured=None, invalid=str(exc))
    return Outcome(completion=completion, structured=structured)


def call_model(
    job: Job,
    *,
    job_id: str,
    budget_id: str,
    decision: RoutingDecision,
    runtime: Runtime,
    attempt: str | None = None,
    recall_first: bool = False,
    stream: bool = False,
) -> Outcome:
    """Admit, make and record one call: budgets reserved and settled, limits and breaker
    consulted, latency measured (see :mod:`routing.fleet`); raises what admission or the
    call raised.

    With ``attempt`` the answer is kept the moment it arrives (:mod:`agents.answers`), and with
    ``recall_first`` (a copy that may have run before) a kept answer is returned, and its call
    recorded, without calling the model again. With ``stream`` the answer's tokens go to the
    job's events as they arrive (:mod:`agents.tokens`).
    """
    fleet = runtime.fleet
    if attempt is not None and recall_first:
        known = retry_redis(
            partial(answers.recall, fleet.client, attempt),
            budget_s=runtime.settings.redis_retry_s, what="looking up a kept answer",
        )  # fmt: skip
        if known is not None:
            logger.warning("attempt %s answered before: its answer is reused, not asked again",
                           attempt)  # fmt: skip
            outcome = read_answer(job, known.completion, runtime)
            _record(fleet, known.admission, outcome)
            return dataclasses.replace(outcome, deployment=known.admission.key)
    model = decided(runtime.catalog, decision)
    admission = fleet.admit(
        model,
        tenant=job.tenant,
        job_id=budget_id,
        agent=job.target,
        prompt_tokens=decision.prompt_tokens,
        max_tokens=decision.max_output_tokens,
        job_budget_usd=job.max_cost_usd,
    )
    worker = recovery.worker_id() if attempt is not None else None
    if worker is not None and attempt is not None:
        # Listed before the request can leave: if this worker dies mid-call, a live one
        # charges the call at its worst case (answers.charge_lost_calls).
        retry_redis(
            partial(answers.admitted, fleet.client, worker, attempt, admission,
                    ttl_s=runtime.settings.visibility_timeout_s),
            budget_s=runtime.settings.redis_retry_s, what="listing a call in flight",
        )  # fmt: skip
    report = partial(
        metrics.llm_call,
        provider=model.provider, model=model.name, tier=str(model.tier), tenant=job.tenant,
        agent=job.target, deployment=admission.key,
    )  # fmt: skip
    started = time.perf_counter()
    sent = threading.Event()
    keep = None if attempt is None else _keeper(attempt, admission, worker, runtime)
    span_cm = tracing.llm_span(
        model.name, provider=model.provider, max_tokens=decision.max_output_tokens
    )
    try:
        with span_cm as span:
            done = execution.run(
                execute(
                    job,
                    job_id=job_id,
                    decision=decision,
                    runtime=runtime,
                    attempt=attempt,
                    sent=sent,
                    keep=keep,
                    tokens=_token_events(job, job_id, budget_id, runtime) if stream else None,
                ),
                job_id=job_id,
                bound_s=call_bound_s(job, runtime),
            )
            tracing.record_llm_response(
                span, input_tokens=done.prompt_tokens, output_tokens=done.completion_tokens,
                finish_reasons=[done.finish_reason] if done.finish_reason else None,
                cost_usd=done.cost_usd,
            )  # fmt: skip
    except Cancelled as exc:
        if not sent.is_set():
            fleet.abandoned(admission)
            _out_of_flight(fleet, worker, admission, runtime)
            raise
        # Cancelled after the request may have left: the provider may bill it, so it is
        # charged at its worst case and marked uncertain (docs/reliability.md).
        elapsed = time.perf_counter() - started
        fleet.uncertain(admission, exc, latency_s=elapsed)
        _out_of_flight(fleet, worker, admission, runtime)
        report(outcome=type(exc).__name__, latency_s=elapsed, tokens_in=0, tokens_out=0,
               cost_usd=admission.reservation.amount_usd)  # fmt: skip
        raise
    except Exception as exc:
        elapsed = time.perf_counter() - started
        # A timeout is an unknown outcome too: Fleet.failed charges it at its worst case, and
        # a call stopped by the task's own bound after it left is charged the same way.
        uncertain = isinstance(exc, UNCERTAIN_ERRORS) or (
            isinstance(exc, DeadlineExceeded) and sent.is_set()
        )
        if uncertain:
            fleet.uncertain(admission, exc, latency_s=elapsed)
        else:
            fleet.failed(admission, exc, latency_s=elapsed)
        _out_of_flight(fleet, worker, admission, runtime)
        report(outcome=type(exc).__name__, latency_s=elapsed, tokens_in=0, tokens_out=0,
               cost_usd=admission.reservation.amount_usd if uncertain else 0.0)  # fmt: skip
        raise
    outcome = read_answer(job, done, runtime)
    _record(fleet, admission, outcome)
    report(
        outcome="ok" if outcome.invalid is None else "InvalidOutput",
        latency_s=done.latency_s, tokens_in=done.prompt_tokens,
        tokens_out=done.completion_tokens, cost_usd=done.cost_usd,
    )  # fmt: skip
    return dataclasses.replace(outcome, deployment=admission.key)


def _keeper(
    attempt: str, admission: Admission, worker: str | None, runtime: Runtime
) -> Callable[[Completion], Awaitable[None]]:
    # Kept before anything else, on the loop: a worker that dies from then on leaves the answer
    # to the copy that runs next, which must not ask (and pay) again.
    settings = runtime.settings

    async def keep(done: Completion) -> None:
        client = answers.loop_client(str(settings.backend_url))
        kept = answers.Answer(done, admission)
        await aretry_redis(
            partial(answers.remember, client, attempt, kept, ttl_s=settings.visibility_timeout_s,
                    worker=worker, redacted=settings.store_redacted),
            budget_s=settings.redis_retry_s, what="keeping an answer",
        )  # fmt: skip

    return keep


def _token_events(job: Job, job_id: str, task_id: str, runtime: Runtime) -> TokenEvents:
    settings = runtime.settings
    return TokenEvents(
        answers.loop_client(str(settings.backend_url)), job_id,
        member=None if task_id == job_id else task_id, agent=job.target,
        maxlen=settings.stream_maxlen, ttl_s=settings.stream_ttl_s,
        redacted=settings.store_redacted,
    )  # fmt: skip


def _out_of_flight(
    fleet: Fleet, worker: str | None, admission: Admission, runtime: Runtime
) -> None:
    # Recorded: a live worker must not charge it again should this one die now.
    if worker is not None:
        retry_redis(
            partial(answers.finished, fleet.client, worker, admission),
            budget_s=runtime.settings.redis_retry_s, what="ending a call in flight",
        )  # fmt: skip


def call_bound_s(job: Job, runtime: Runtime) -> float:
    """How long one call may run, all told: the task's time limit, or the job's deadline (plus
    a second, so the provider call's own timeout, set to the deadline, fires first)."""
    left = job.seconds_left(time.time())
    limit = runtime.settings.task_time_limit_s
    return limit if left is None else min(limit, max(left, 0.0) + BOUND_SLACK_S)


def _record(fleet: Fleet, admission: Admission, outcome: Outcome) -> None:
    # The fleet's bookkeeping for a call that answered; idempotent per admission, so a copy
    # replaying a kept answer charges nothing twice.
    done = outcome.completion
    if outcome.invalid is not None:
        error = InvalidOutput(outcome.invalid)
        fleet.failed(admission, error, latency_s=done.latency_s, cost_usd=done.cost_usd)
    else:
        fleet.succeeded(
            admission,
            latency_s=done.latency_s,
            tokens_in=done.prompt_tokens,
            tokens_out=done.completion_tokens,
            cost_usd=done.cost_usd,
            headers=done.headers,
        )
