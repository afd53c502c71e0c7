"""What every Chordal task shares: the task class, the router's and agent's signatures, the
worker's warm-up, and how a failure ends a job (raised) or a team member (returned as data).

:mod:`agents.tasks` (the router), :mod:`agents.agent_task` and :mod:`agents.team_tasks` build on
it; it imports none of them.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

from celery import Task, states
from celery.exceptions import Ignore

from agents.job import Job
from agents.result import Attempt, MemberFailure
from agents.run import Runtime
from routing.decision import RoutingDecision
from workers.app import app
from workers.cancellation import is_cancelled
from workers.deadletter import dead_letter
from workers.errors import DeadlineExceeded, MalformedMessage
from workers.tiers import AGENT_TASK, ROUTE_TASK, ROUTER_QUEUE, transport_priority

logger = logging.getLogger(__name__)


class ChordalTask(Task):  # type: ignore[misc]
    """Base for Chordal's tasks: runs each job once, dead-letters messages that are not jobs."""

    # Task events (Flower) carry a redacted preview of the result, never the whole answer.
    Request = "workers.observability.logs:RedactingRequest"

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
