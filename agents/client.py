"""The producer side: submit jobs, read their state, wait for results.

This module imports neither LiteLLM nor the routing code, so a web request handler can enqueue a
job in microseconds. Producers in another codebase need not import Chordal at all: a job is one
JSON object sent by task name (see the README, "Submitting from another codebase")::

    celery_app.send_task("chordal.route", args=[{"agent": "summarizer", "input": "..."}],
                         queue="router")

A submit waits at most ``submit_timeout_s`` for the broker and Redis, then raises
BrokerUnavailable. A keyed job is claimed *pending*, published, then marked *published*; a repeat
finding it pending publishes the same id again (workers drop a second copy): a retry completes an
interrupted submit.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, TypeVar

import redis
from celery import Celery
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from agents.claims import ClaimStore, claim_key, fingerprint
from agents.events import TERMINAL_STATES, Event, Events, newer, terminal_event
from agents.job import Job, goes_straight_to_its_tier, parse_job
from agents.registry import AgentRegistry
from workers.cancellation import request_cancel
from workers.errors import BrokerUnavailable, Cancelled, ChordalError, IdempotencyConflict
from workers.observability import tracing
from workers.redis_pools import BoundedRedisBackend, is_redis_url
from workers.settings import Settings, get_settings
from workers.tiers import AGENT_TASK, ROUTE_TASK, ROUTER_QUEUE, Tier, transport_priority
from workers.watchdog import DEADLINES_KEY

logger = logging.getLogger(__name__)

# A submit's budget holds this many network attempts; each socket wait gets half of one (connect,
# then the reply), so a server that accepts and never answers still costs one attempt at most.
ATTEMPTS_PER_SUBMIT = 4
# How long one read of a job's events waits for news before the job's state is checked.
STREAM_POLL_MS = 1_000
FIRST_PAUSE_S, MAX_PAUSE_S = 0.05, 0.5
# A broker or Redis that refuses, resets or stalls; kombu wraps the transport's own errors in
# OperationalError.
TRANSIENT = (OperationalError, redis.ConnectionError, redis.TimeoutError, OSError)
T = TypeVar("T")


class ProducerBackend(BoundedRedisBackend):
    """A Client's own result backend: no subscription to a job's result at publish time (Celery's
    does, and with Redis down retries it for ~20 s past any submit timeout). The Client polls
    (``status``, ``wait``); ``AsyncResult.get`` subscribes on its own."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Nothing: see the class."""


class Budget:
    """The time left to one submit, spent in bounded attempts."""

    def __init__(self, total_s: float) -> None:
        self.attempt_s = total_s / ATTEMPTS_PER_SUBMIT
        self.timed_out = False  # an attempt timed out: what it sent may have arrived
        self._deadline = time.monotonic() + total_s

    def left(self) -> float:
        """Seconds left before the submit must give up."""
        return self._deadline - time.monotonic()

    def run(self, step: Callable[[], T], *, what: str, reserve_s: float = 0.0) -> T:
        """``step()``, tried again after transient failures while another attempt (and
        ``reserve_s`` for the steps after it) still fits; then BrokerUnavailable."""
        pause = FIRST_PAUSE_S
        while True:
            try:
                return step()
            except Exception as exc:
                if not transient(exc):
                    raise
                self.timed_out = self.timed_out or timed_out(exc)
                if self.left() < self.attempt_s + reserve_s + pause:
                    msg = f"{what}: no answer in time ({type(exc).__name__}: {exc})"
                    raise BrokerUnavailable(msg) from exc
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_S)


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` means the broker or Redis did not answer (worth another attempt)."""
    if isinstance(exc, TRANSIENT):
        return True
    # Celery's result consumer (an app passed in subscribes at publish) gives up this way.
    return isinstance(exc, RuntimeError) and isinstance(exc.__cause__, TRANSIENT)


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is (or wraps) a reply that timed out: the command may have been applied."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | redis.TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def bound_producer(app: Celery, settings: Settings) -> None:
    """Bound every wait of ``app``'s publishes by the submit budget's socket timeout."""
    socket_s = settings.submit_timeout_s / ATTEMPTS_PER_SUBMIT / 2
    conf = app.conf
    conf.broker_connection_timeout = socket_s
    timeouts: dict[str, float] = (
        {"socket_timeout": socket_s, "socket_connect_timeout": socket_s}
        if is_redis_url(str(conf.broker_url))
        else {"write_timeout": socket_s}  # py-amqp: a publish writes and reads nothing
    )
    # max_retries 0: kombu would sleep 2 s between connection attempts, past any socket timeout.
    conf.broker_transport_options = {**conf.broker_transport_options, **timeouts, "max_retries": 0}
    if is_redis_url(settings.backend_url):
        conf.result_backend = f"{__name__}:{ProducerBackend.__name__}+{settings.backend_url}"


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
            bound_producer(app, self.settings)
        self.app = app
        self.agents = agents or AgentRegistry.load(self.settings.agents_path)
        # Traced only when the standard OTEL_* variables ask for it (then a team job is one
        # trace from this submit to its aggregator).
        tracing.setup_tracing(service_name="chordal-producer")

    @cached_property
    def claims(self) -> ClaimStore:
        """Idempotency claims and deadline registrations, with bounded waits."""
        socket_s = self.settings.submit_timeout_s / ATTEMPTS_PER_SUBMIT / 2
        return ClaimStore(self.app, socket_s=socket_s, ttl_s=self.settings.idempotency_ttl_s)

    def validate(self, job: Job | Mapping[str, Any]) -> Job:
        """``job`` checked as :meth:`submit` checks it (a Job passes as is, but for its size);
        raises InvalidJob (UnknownAgent for an agent or team nobody defines) naming the field."""
        parsed = parse_job(dict(job) if isinstance(job, Mapping) else job, settings=self.settings)
        if parsed.team is not None:
            self.agents.get_team(parsed.team)
        else:
            self.agents.get(parsed.target)
        return parsed

    @cached_property
    def events(self) -> Events:
        """Jobs' event streams (states, members, tokens), on the bounded client."""
        settings = self.settings
        # Its own connections: a blocking read outlasts the claims client's short timeouts.
        params = dict(getattr(self.app.backend, "connparams", {}))
        params.update(socket_timeout=STREAM_POLL_MS / 1000 + settings.submit_timeout_s,
                      socket_connect_timeout=settings.submit_timeout_s)  # fmt: skip
        client = redis.Redis(connection_pool=redis.ConnectionPool(**params))
        return Events(client, maxlen=settings.stream_maxlen, ttl_s=settings.stream_ttl_s)

    def stream(self, job_id: str, *, after: str = "0-0", timeout: float = 300.0) -> Iterator[Event]:
        """The job's events as they happen, from after ``after``, ending with its terminal
        state; raises TimeoutError if it has not ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self.events.read(job_id, after=after, block_ms=STREAM_POLL_MS)
            for event in batch:
                yield event
                after = event.id
                if event.terminal:
                    return
            if not batch and (end := self.ended(job_id)) is not None:
                if newer(end, after):
                    yield end
                return
        raise TimeoutError(f"job {job_id} had not ended after {timeout} s")

    def ended(self, job_id: str) -> Event | None:
        """The job's terminal ``state`` event, recorded in its stream, if its result says it
        ended (None while it runs). The result is the record: an end whose event was lost
        still ends a reader's stream, and one that resumes later sees the same end."""
        status = self.status(job_id)
        info = dict(status.result or {})
        info.update(model=status.model, tier=status.tier, error=status.error,
                    error_type=status.error_type)  # fmt: skip
        data = terminal_event(status.state, info)
        if data is None:
            return None
        if (last := self.events.last(job_id)) is not None and last.terminal:
            return last  # recorded already (by its worker, or by an earlier reader)
        return Event(self.events.append(job_id, "state", data), "state", data)

    def submit(self, job: Job | Mapping[str, Any], *, job_id: str | None = None) -> str:
        """Validate and enqueue ``job``; returns its id. Raises InvalidJob naming the field.

        ``job_id`` is the id to give a new job (default: a new UUID), for a caller that records
        something under it first (the gateway, the job's owner).

        A repeat of a job with an ``idempotency_key`` returns the first one's id without
        enqueuing it again; another job under the same key raises IdempotencyConflict. When the
        broker or Redis does not answer within ``submit_timeout_s``, raises BrokerUnavailable;
        a claim is left only pending, for the retry, if the publish may have gone out.
        """
        parsed = self.validate(job)
        message = parsed.model_dump(mode="json")
        budget = Budget(self.settings.submit_timeout_s)
        grace_s = self.settings.watchdog_grace_s
        deadline = None if parsed.deadline_at is None else parsed.deadline_at + grace_s
        if parsed.idempotency_key is not None:
            return self._submit_once(parsed, message, budget, deadline, job_id)
        job_id, undo = job_id or str(uuid.uuid4()), None
        if deadline is not None:
            claims = self.claims
            # The watchdog's registration (workers.watchdog.watch), on the bounded client.
            budget.run(lambda: claims.client.zadd(DEADLINES_KEY, {job_id: deadline}),
                       what="registering the deadline", reserve_s=budget.attempt_s)  # fmt: skip
            undo = partial(claims.client.zrem, DEADLINES_KEY, job_id)
        self._publish(parsed, message, job_id, budget, undo)
        return job_id

    def _submit_once(self, parsed: Job, message: dict[str, Any], budget: Budget,
                     deadline: float | None, job_id: str | None) -> str:  # fmt: skip
        # Claim (pending), publish, mark published: a repeat finding the claim published
        # returns its id; finding it pending, it publishes that id again and marks it.
        key = claim_key(parsed.tenant, str(parsed.idempotency_key))
        wanted, claims, new_id = fingerprint(message), self.claims, job_id or str(uuid.uuid4())
        claim = budget.run(lambda: claims.claim(key, new_id, wanted, deadline),
                           what="claiming the idempotency key",
                           reserve_s=budget.attempt_s)  # fmt: skip
        if claim.fingerprint != wanted:
            msg = (f"idempotency key {parsed.idempotency_key!r} was used for a different job "
                   f"({claim.job_id}): use a new key, or resend the same job")  # fmt: skip
            raise IdempotencyConflict(msg, "idempotency_key")
        if claim.state == "published":
            return claim.job_id
        undo = partial(claims.release, key, claim.job_id) if claim.created else None
        self._publish(parsed, message, claim.job_id, budget, undo)
        # Out of time, the claim stays pending: a repeat publishes again, which workers ignore.
        if budget.left() >= budget.attempt_s:
            try:
                claims.mark_published(key, claim.job_id)
            except Exception as exc:  # the job is out: its submit succeeded
                logger.warning("job %s published; its claim stays pending: %s", claim.job_id, exc)
        return claim.job_id

    def _publish(self, parsed: Job, message: dict[str, Any], job_id: str, budget: Budget,
                 undo: Callable[[], object] | None) -> None:  # fmt: skip
        priority = transport_priority(parsed.priority, broker_url=str(self.app.conf.broker_url))

        task, queue = ROUTE_TASK, ROUTER_QUEUE
        args: list[Any] = [message]
        if self.settings.pinned_skip_router and goes_straight_to_its_tier(parsed):
            # The tier's own worker routes it (agents.agent_task): one hop, not two. Its
            # decision is None until then.
            task, queue = AGENT_TASK, Tier(str(parsed.tier)).queue
            args = [message, None, []]

        def send() -> None:
            # One publish per attempt: Budget.run, not kombu, decides whether to try again.
            self.app.send_task(task, args=args, task_id=job_id, queue=queue, priority=priority,
                               retry=False)  # fmt: skip

        kind = "team" if parsed.team is not None else "agent"
        try:
            with tracing.submit_span(kind, parsed.target, job_id=job_id):
                budget.run(send, what="publishing the job",
                           reserve_s=budget.attempt_s if undo else 0.0)  # fmt: skip
        except BaseException as exc:
            # Kept pending when the job may have gone out (a reply timed out), or when no attempt
            # fits any more: a repeat then publishes this same id, which workers run once.
            sent = budget.timed_out or timed_out(exc)
            if undo is not None and not sent and budget.left() >= budget.attempt_s:
                try:
                    undo()
                except Exception as error:  # best effort: the claim then waits for a repeat
                    logger.warning("could not undo the claim of job %s: %s", job_id, error)
            raise

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
        try:
            self.app.backend.mark_as_revoked(job_id, reason="cancelled")
        except redis.exceptions.NoPermissionError:
            # A producer's Redis user may not write results: the worker that stops the job
            # records it REVOKED (agents.base.ChordalTask.revoked).
            logger.info("job %s: cancel requested; its worker records it REVOKED", job_id)
        self.events.publish(job_id, "state", {"state": "REVOKED"})

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
