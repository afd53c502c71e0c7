"""What every Chordal task shares: the task class (one running copy per task, dead letters,
Redis blips waited out), the router's and agent's signatures, and how a failure ends a job
(raised) or a team member (returned as data).

:mod:`agents.tasks` (the router), :mod:`agents.agent_task` and :mod:`agents.team_tasks` build on
it; it imports none of them.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from functools import lru_cache, partial
from typing import Any

import redis
from celery import Task, states
from celery.exceptions import Ignore, Reject
from celery.signals import task_postrun
from kombu.exceptions import OperationalError

from agents import job_events
from agents.answers import CRITIC_CALL, answer_key
from agents.dead_members import member_failure
from agents.job import Job
from agents.result import Attempt, MemberFailure
from agents.run import Runtime
from routing.decision import EXPLAINED_ONLY, RoutingDecision
from workers import execution, greenlets
from workers.app import app
from workers.cancellation import cancel_key
from workers.deadletter import record_dead_letter
from workers.errors import BrokerUnavailable, DeadlineExceeded, MalformedMessage
from workers.lease import Leases, Verdict, run_key
from workers.recovery import DELIVERIES_HEADER, deliveries
from workers.redis_retry import retry_redis, retryable
from workers.settings import get_settings
from workers.tiers import AGENT_TASK, ROUTE_TASK, ROUTER_QUEUE, transport_priority

logger = logging.getLogger(__name__)

DEFERRALS_HEADER = "chordal_deferrals"
# A copy that finds another running waits 1, 2, 4, 8, then 10 s between looks.
DEFER_FIRST_S = 1.0
DEFER_MAX_S = 10.0
# A lease outlives three missed heartbeats, and lapses before the heartbeat restore gives a
# dead worker's messages back (worker_dead_after_s is at least three beats).
LEASE_BEATS = 3
# A task that meets a Redis or broker blip runs again after 0.5, 1, 2, then 4 s between tries.
BLIP_FIRST_PAUSE_S = 0.5
BLIP_MAX_PAUSE_S = 4.0
# A message that cannot be dead-lettered now goes back to its queue after this pause.
REDELIVER_PAUSE_S = 1.0


class ChordalTask(Task):  # type: ignore[misc]
    """Base for Chordal's tasks: one running copy per task, dead-letters messages that are not
    jobs or that came back too often (docs/reliability.md)."""

    # Task events (Flower) carry a redacted preview of the result, never the whole answer.
    Request = "workers.observability.logs:RedactingRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.is_eager:
            return super().__call__(*args, **kwargs)
        if execution.STOPPING.is_set():
            # The worker is shutting down: another one runs this, starting now.
            raise Reject("the worker is shutting down", requeue=True)
        # One lease token for every try of this copy: a retry after a blip is the same run.
        request.chordal_token = uuid.uuid4().hex
        return self._through_blips(*args, **kwargs)

    def _through_blips(self, *args: Any, **kwargs: Any) -> Any:
        # A broker or Redis blip is not the job's failure. Running the task again is safe -- as
        # safe as a redelivery: this copy keeps its lease, a kept answer is reused instead of
        # asking again (may_have_run), hand-offs are deduplicated by the next link's lease and
        # the fleet's bookkeeping by call id. Past CHORDAL_REDIS_RETRY_S the error is raised,
        # and the message, if it cannot be acknowledged, comes back later.
        deadline = time.monotonic() + get_settings().redis_retry_s
        pause = BLIP_FIRST_PAUSE_S
        while True:
            try:
                return self._run_once(*args, **kwargs)
            except MalformedMessage as exc:
                self._keep(str(exc), args, kwargs)
                # A team member's place in its chord is filled as a failed member's: the team
                # goes on with the others instead of failing as a whole.
                failure = member_failure(self.request.id, args, kwargs, str(exc))
                if failure is not None and self.request.chord:
                    return failure
                raise
            except Exception as exc:
                if not infrastructure_error(exc) or time.monotonic() + pause > deadline:
                    raise
                logger.warning("%s[%s] met %s: running it again in %.1f s", self.name,
                               self.request.id, type(exc).__name__, pause)  # fmt: skip
                self.request.chordal_rerun = True
                greenlets.sleep(pause)
                pause = min(pause * 2, BLIP_MAX_PAUSE_S)

    def _run_once(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        self._refuse_poison()
        root = request.root_id or request.id
        try:
            inspect.signature(self.run).bind(*args, **kwargs)
        except TypeError as exc:
            raise MalformedMessage(f"malformed message for {self.name}: {exc}", None) from None
        key = run_key(request.id, self.name, request.replaced_task_nesting)
        # Whether the job was cancelled is asked in the lease's own round trip.
        verdict = leases().acquire(key, request.chordal_token, unless=cancel_key(root))
        if verdict is Verdict.CANCELLED:
            logger.info("%s[%s] not run: job %s was cancelled", self.name, request.id, root)
            self.revoked()
            raise Ignore()
        if verdict is Verdict.DONE:
            logger.warning("%s[%s] delivered again after it finished: dropped", self.name,
                           request.id)  # fmt: skip
            raise Ignore()
        if verdict is Verdict.BUSY:
            self._defer()
            raise Ignore()
        request.chordal_lease = key
        if (request.delivery_info or {}).get("redelivered"):
            recorded = self.AsyncResult(request.id)
            if recorded.state in states.READY_STATES:
                return self._recorded(recorded)
        return super().__call__(*args, **kwargs)

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: dict[str, Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        """Celery's update, and the job's event (its own task only: ``task_id`` unset)."""
        super().update_state(task_id, state, meta, **kwargs)
        if task_id is None and state is not None:
            job_events.changed(self, state, meta)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """After the result is stored: the job's (or member's) event."""
        job_events.succeeded(self, retval)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """After the failure is stored: the job's (or member's) event."""
        job_events.failed(self, exc)

    def revoked(self) -> None:
        """Record this task REVOKED: a producer that may not write results (its Redis user's
        ACL) asks for the cancel, and the worker that stops the task records it."""
        try:
            self.backend.mark_as_revoked(self.request.id, reason="cancelled")
        except (redis.RedisError, OSError) as exc:  # the cancel stands; only its record is late
            logger.warning("%s[%s] cancelled, not recorded REVOKED: %s", self.name,
                           self.request.id, exc)  # fmt: skip

    @property
    def attempt(self) -> str:
        """This link of the task id's hand-off chain: what a provider call is counted by."""
        return f"{self.request.id}:{self.request.replaced_task_nesting}"

    def may_have_run(self) -> bool:
        """Whether an earlier copy of this message may have run (and got an answer)."""
        request = self.request
        redelivered = bool((request.delivery_info or {}).get("redelivered"))
        again = bool(request.get(DEFERRALS_HEADER) or request.get("chordal_rerun"))
        return redelivered or again or deliveries(request.__dict__) > 1

    def _refuse_poison(self) -> None:
        # A message that came back this often kills or stalls whoever takes it: keep it for an
        # operator instead of handing it to one more worker.
        count = deliveries(self.request.__dict__)
        limit = get_settings().max_deliveries
        if count <= limit:
            return
        # Raised: kept on the dead-letter list (by _through_blips), and the job ends FAILED with
        # the reason (a team member as a failed member).
        reason = f"delivered {count} times (CHORDAL_MAX_DELIVERIES is {limit})"
        raise MalformedMessage(f"dead-lettered: {reason}", None)

    def _keep(self, reason: str, args: Any, kwargs: Any) -> None:
        # Record the message on the dead-letter list before Celery acknowledges it. If the
        # record cannot be written (Redis away), it goes back to its queue instead: a poison
        # message is never acknowledged into the void.
        request = self.request
        try:
            record_dead_letter(
                self.app,
                reason=reason,
                queue=(request.delivery_info or {}).get("routing_key"),
                task=self.name,
                task_id=request.id,
                body={"args": list(args or ()), "kwargs": dict(kwargs or {})},
            )
        except BrokerUnavailable:
            greenlets.sleep(REDELIVER_PAUSE_S)
            raise Reject("cannot keep a dead letter now", requeue=True) from None

    def _defer(self) -> None:
        # Another copy of this task runs now (a message given back while its first copy still
        # ran). This copy waits in the queue, not in a worker slot, and never calls the model:
        # when it comes back it finds the first copy done (and is dropped) or gone (and runs).
        request = self.request
        deferrals = int(request.get(DEFERRALS_HEADER) or 0)
        wait = min(DEFER_MAX_S, DEFER_FIRST_S * 2**deferrals)
        headers = {DEFERRALS_HEADER: deferrals + 1, DELIVERIES_HEADER: deliveries(request.__dict__)}
        self.signature_from_request(countdown=wait, headers=headers).apply_async()
        logger.warning("%s[%s] is running elsewhere: this copy waits %.1f s", self.name,
                       request.id, wait)  # fmt: skip

    def _recorded(self, recorded: Any) -> Any:
        # A copy of a task whose job already ended (its worker died after storing the outcome,
        # before the ack). A chord member may have died after storing its result but before
        # the join counted it: returning the recorded result joins it (Celery 5.7's join
        # ignores a task id it has already counted). Anything else is done; running it would
        # call the model again or overwrite the outcome.
        if recorded.state == states.SUCCESS and self.request.chord and not self.request.chain:
            logger.warning("%s[%s] redelivered: rejoining its recorded result", self.name,
                           self.request.id)  # fmt: skip
            return recorded.result
        logger.warning("%s[%s] redelivered after its job ended (%s): not run again", self.name,
                       self.request.id, recorded.state)  # fmt: skip
        raise Ignore()


def infrastructure_error(error: BaseException) -> bool:
    """Whether ``error`` is Redis or the broker failing, not the job: worth waiting out."""
    return retryable(error) or isinstance(error, OperationalError)


@lru_cache(maxsize=1)
def leases() -> Leases:
    """This process's execution leases, in the result backend's Redis."""
    settings = get_settings()
    return Leases(
        app.backend.client,
        ttl_s=LEASE_BEATS * settings.heartbeat_interval_s,
        done_ttl_s=settings.result_expires_s,
    )


@task_postrun.connect
def _end_lease(task: Any = None, state: str | None = None, **_: Any) -> None:
    # After the result is stored and the chord joined (or the job handed on): later copies of
    # this link are dropped. A task that gave its message back (Reject, on shutdown) lets the
    # next copy run at once instead.
    key = getattr(getattr(task, "request", None), "chordal_lease", None)
    if key is None:
        return
    if state == states.REJECTED:
        end = partial(leases().release, key)
    else:
        attempt = task.attempt
        drop = [answer_key(attempt), answer_key(f"{attempt}:{CRITIC_CALL}")]
        end = partial(leases().finish, key, drop=drop)
    retry_redis(end, budget_s=get_settings().redis_retry_s, what="ending a task's lease")


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
        args=(
            job.model_dump(mode="json"),
            decision.model_dump(mode="json", exclude=EXPLAINED_ONLY),
        ),
        kwargs=kwargs,
        queue=decision.tier.queue,
        priority=priority(job, runtime),
    )


def route_signature(job: Job, *, runtime: Runtime, member: bool = False) -> Any:
    """The router task for ``job``; as a team ``member`` it returns failures as data."""
    return app.signature(
        ROUTE_TASK,
        args=(job.model_dump(mode="json"),),
        kwargs={"member": member},
        queue=ROUTER_QUEUE,
        priority=priority(job, runtime),
    )


def priority(job: Job, runtime: Runtime) -> int:
    """The broker priority of `job`'s messages (inverted on Redis, where 0 runs first)."""
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
