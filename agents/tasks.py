"""Celery tasks: the router (``chordal.route``) and its classified variant.

Both are thin: decode the message, call :mod:`agents.run`, encode the result. The router hands
the job's id to the agent task (:mod:`agents.agent_task`) on the chosen tier's queue
(:func:`~workers.handoff.hand_off`, ``Task.replace`` without its exception where no chord or
chain needs it), so the job's id resolves to the agent's result; for a team job it replaces
itself with the team's canvas (:mod:`agents.team_tasks`). As a team *member* (``member=True``)
the router returns a failure as a :class:`~agents.result.MemberFailure` instead of raising it.
"""

from __future__ import annotations

from typing import Any

from celery import Task, chain

from agents import explain
from agents.base import (
    ChordalTask,
    agent_signature,
    check_deadline,
    priority,
    route_signature,
    settle,
)
from agents.job import COMPLEXITY_NAMES, Job, parse_job
from agents.run import Runtime, get_runtime, live_plan
from agents.team_tasks import team_canvas
from routing.complexity import estimate_complexity
from workers.app import app
from workers.errors import ChordalError
from workers.handoff import hand_off
from workers.observability import tracing
from workers.tiers import CLASSIFIED_TASK, ROUTE_TASK, ROUTER_QUEUE

CLASSIFIER = "classifier"


@app.task(name=ROUTE_TASK, bind=True, base=ChordalTask)
def route(self: Task, job: dict[str, Any], member: bool = False) -> Any:
    """Choose the model for a job and hand it to that tier's agent task (or start its team)."""
    runtime = get_runtime()
    parsed = parse_job(job, from_queue=True)
    root = self.request.root_id or self.request.id
    if parsed.team is not None:
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
        priority=priority(job, runtime),
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
