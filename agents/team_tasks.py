"""Team jobs as Celery canvases: chords whose header members route themselves.

Each member is the router task in *member* mode: it replaces itself with the agent task on the
tier its own routing chose, and a failure after its retries is returned as a
:class:`~agents.result.MemberFailure` instead of raised, so the chord's join always completes
and the aggregator sees which members failed. The job's id follows every ``Task.replace`` down
to the last task, :data:`~workers.tiers.TEAM_FINALIZE_TASK`, whose :class:`TeamResult` is the
job's result.

A member may be a team. Its router task replaces itself with the nested team's canvas, which
inherits the member's task id and its place in the parent's chord, so the nested team's
finalize task reports to the parent's join like any member (as a compact reference, or a
MemberFailure if the nested team failed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from celery import Task, chain, chord

from agents import tree
from agents.base import ChordalTask, route_signature, settle
from agents.budget import aggregator_budget, share_budget, spent
from agents.job import Job, parse_job
from agents.members import load_members, park_member
from agents.result import AgentResult, MemberFailure, TeamResult, outcome_from
from agents.run import Runtime, get_runtime
from agents.team import aggregator_input, first_jobs, member_job, plan_jobs, revision_jobs
from workers import watchdog
from workers.app import app
from workers.errors import AgentFailed, ChordalError
from workers.tiers import (
    TEAM_AGGREGATE_TASK,
    TEAM_FANOUT_TASK,
    TEAM_FINALIZE_TASK,
    TEAM_ROUND_TASK,
)


def team_canvas(job: Job, runtime: Runtime, *, root: str, team_id: str, member: bool) -> Any:
    """The canvas that runs team ``job`` as task ``team_id`` of job ``root``; its last task
    returns the TeamResult (for a nested team, a ``member``: a compact reference to it)."""
    team = runtime.agents.get_team(job.team or "")
    if team.deadline_s is not None:
        own = time.time() + team.deadline_s
        job = job.model_copy(update={"deadline_at": min(own, job.deadline_at or own)})
        if not member:  # a nested team's deadline bounds its members; the root's is watched
            watchdog.watch(app, root, deadline_at=own, grace_s=runtime.settings.watchdog_grace_s)
    team_job = job.model_dump(mode="json")
    ctx = _Ctx(root=root, parent=team_id, member=member, runtime=runtime)
    first = first_jobs(team, job)
    if team.pattern == "plan_execute":
        (planner,) = ctx.tracked(first, phase="planner", member=False)
        fan_out = app.signature(TEAM_FANOUT_TASK, kwargs={"team_job": team_job, "member": member})
        return chain(planner, fan_out)
    rounds_after = team.rounds if team.pattern == "debate" else 0
    members = share_budget(
        job, first, aggregator=team.aggregator, already_spent=0.0, rounds_after=rounds_after,
        runtime=runtime,
    )  # fmt: skip
    if team.pattern == "debate":
        body = app.signature(
            TEAM_ROUND_TASK,
            kwargs={"team_job": team_job, "round_no": 1, "earlier": [], "member": member},
        )
        return chord(ctx.tracked(members, phase="round 0"), body)
    phase = "map" if team.pattern == "map_reduce" else "member"
    return _fan_out(members, team_job, ctx=ctx, phase=phase)


@dataclass(frozen=True)
class _Ctx:
    """Where a team's tasks are: the job's root id, the team's own task id, member or not."""

    root: str
    parent: str
    member: bool
    runtime: Runtime

    @classmethod
    def of(cls, task: Task, *, member: bool) -> _Ctx:
        # Every task of a team's canvas carries the team's task id: each Task.replace and each
        # chord body inherits the id of the task it replaces.
        root = str(task.request.root_id or task.request.id)
        return cls(root=root, parent=str(task.request.id), member=member, runtime=get_runtime())

    def tracked(self, jobs: list[Job], *, phase: str, member: bool = True) -> list[Any]:
        """Router signatures for ``jobs``, their task ids fixed and written to the job's tree."""
        signatures = [route_signature(job, runtime=self.runtime, member=member) for job in jobs]
        entries = [
            {
                "task_id": sig.freeze().id,
                "agent": job.target,
                "phase": phase,
                "index": index,
                "parent": self.parent,
            }
            for index, (sig, job) in enumerate(zip(signatures, jobs, strict=True))
        ]
        tree.record(app, self.root, entries, ttl_s=self.runtime.settings.result_expires_s)
        return signatures


def _fan_out(
    members: list[Job],
    team_job: dict[str, Any],
    *,
    ctx: _Ctx,
    phase: str,
    planner: Any = None,
    earlier: list[dict[str, Any]] | None = None,
) -> Any:
    body = app.signature(
        TEAM_AGGREGATE_TASK,
        kwargs={
            "team_job": team_job,
            "planner": planner,
            "earlier": earlier or [],
            "member": ctx.member,
        },
    )
    return chord(ctx.tracked(members, phase=phase), body)


@app.task(name=TEAM_ROUND_TASK, bind=True, base=ChordalTask)
def debate_round(
    self: Task,
    previous: list[dict[str, Any]],
    *,
    team_job: dict[str, Any],
    round_no: int,
    earlier: list[dict[str, Any]],
    member: bool = False,
) -> Any:
    """Start debate round ``round_no`` over the previous round's answers (the last goes to
    the judge)."""
    ctx = _Ctx.of(self, member=member)
    job = parse_job(team_job, from_queue=True)
    team = ctx.runtime.agents.get_team(job.team or "")
    history = [*earlier, *previous]
    phase = f"round {round_no}"
    try:
        revisions = revision_jobs(team, job, load_members(app, previous), round_no=round_no)
        revisions = share_budget(
            job, revisions, aggregator=team.aggregator, already_spent=spent(history),
            rounds_after=team.rounds - round_no, runtime=ctx.runtime,
        )  # fmt: skip
    except ChordalError as exc:
        return settle(self.request.id, job, exc, [], member=member)
    if round_no < team.rounds:
        body = app.signature(
            TEAM_ROUND_TASK,
            kwargs={
                "team_job": team_job,
                "round_no": round_no + 1,
                "earlier": history,
                "member": member,
            },
        )
        return self.replace(chord(ctx.tracked(revisions, phase=phase), body))
    return self.replace(_fan_out(revisions, team_job, ctx=ctx, phase=phase, earlier=history))


@app.task(name=TEAM_FANOUT_TASK, bind=True, base=ChordalTask)
def fan_out_plan(
    self: Task, planner: dict[str, Any], *, team_job: dict[str, Any], member: bool = False
) -> Any:
    """Build the chord of a plan_execute team from its planner's plan."""
    ctx = _Ctx.of(self, member=member)
    job = parse_job(team_job, from_queue=True)
    team = ctx.runtime.agents.get_team(job.team or "")
    known = set(ctx.runtime.agents.names())
    try:
        members = plan_jobs(team, job, planner.get("structured") or {}, known)
        if not members:
            raise AgentFailed(f"team {team.name}: the planner returned no steps")
        members = share_budget(
            job, members, aggregator=team.aggregator, already_spent=spent([planner]),
            runtime=ctx.runtime,
        )  # fmt: skip
    except ChordalError as exc:
        return settle(self.request.id, job, exc, [], member=member)
    return self.replace(_fan_out(members, team_job, ctx=ctx, phase="step", planner=planner))


@app.task(name=TEAM_AGGREGATE_TASK, bind=True, base=ChordalTask)
def aggregate(
    self: Task,
    members: list[dict[str, Any]],
    *,
    team_job: dict[str, Any],
    planner: dict[str, Any] | None = None,
    earlier: list[dict[str, Any]] | None = None,
    member: bool = False,
) -> Any:
    """Check ``min_success``, then hand every member's answer to the aggregator agent.

    ``earlier`` holds a debate's previous rounds: reported and billed, not aggregated.
    """
    ctx = _Ctx.of(self, member=member)
    job = parse_job(team_job, from_queue=True)
    team = ctx.runtime.agents.get_team(job.team or "")
    try:
        outcomes = load_members(app, members)
        _check_min_success(team.name, team.min_success, members)
        aggregator_job = member_job(
            job,
            agent=team.aggregator,
            text=aggregator_input(job, outcomes),
            tier=team.aggregator_tier,
            index=len(members),
            bound=False,  # the aggregator runs on what arrived by the deadline, after it
        ).model_copy(
            update={
                "max_cost_usd": aggregator_budget(
                    job, already_spent=spent([*(earlier or []), *members, planner])
                )
            }
        )
    except ChordalError as exc:
        return settle(self.request.id, job, exc, [], member=member)
    finish = app.signature(
        TEAM_FINALIZE_TASK,
        kwargs={
            "team_job": team_job,
            "members": [*(earlier or []), *members],
            "planner": planner,
            "member": member,
        },
    )
    # A nested team's aggregator reports failure as data, so the parent team learns of it.
    (combine,) = ctx.tracked([aggregator_job], phase="aggregator", member=member)
    return self.replace(chain(combine, finish))


def _check_min_success(team: str, required: int, members: list[dict[str, Any]]) -> None:
    succeeded = sum(1 for m in members if m.get("status") == "succeeded")
    if succeeded >= required:
        return
    failures = "; ".join(
        f"[{i}] {m['agent']}: {m['error_kind']}: {m['error']}"
        for i, m in enumerate(members, start=1)
        if m.get("status") != "succeeded"
    )
    msg = (
        f"team {team}: {succeeded} of {len(members)} members succeeded, "
        f"{required} required. Failed members: {failures}"
    )
    raise AgentFailed(msg)


@app.task(name=TEAM_FINALIZE_TASK, bind=True, base=ChordalTask)
def finalize(
    self: Task,
    aggregator: dict[str, Any],
    *,
    team_job: dict[str, Any],
    members: list[dict[str, Any]],
    planner: dict[str, Any] | None = None,
    member: bool = False,
) -> dict[str, Any]:
    """The team's result: the aggregator's answer, every member's outcome, the totals."""
    job = parse_job(team_job, from_queue=True)
    team = get_runtime().agents.get_team(job.team or "")
    (combined,) = load_members(app, [aggregator])
    if combined.get("status") != "succeeded":
        error = AgentFailed(f"team {team.name}: aggregator {combined['agent']} failed: "
                            f"{combined['error_kind']}: {combined['error']}")  # fmt: skip
        return settle(self.request.id, job, error, [], member=member)
    outcomes = [outcome_from(m) for m in load_members(app, members)]
    answered = [o for o in outcomes if not isinstance(o, MemberFailure)]
    timed_out = [o for o in outcomes if isinstance(o, MemberFailure) and o.status == "timed_out"]
    final = AgentResult.model_validate(combined)
    planned = AgentResult.model_validate(planner) if planner else None
    billed = [*answered, final, *([planned] if planned else [])]
    result = TeamResult(
        job_id=self.request.id,
        team=team.name,
        pattern=team.pattern,
        tenant=job.tenant,
        metadata=dict(job.metadata),
        output=final.output,
        structured=final.structured,
        aggregator=final,
        members=outcomes,
        planner=planned,
        succeeded=len(answered),
        failed=len(outcomes) - len(answered) - len(timed_out),
        timed_out=len(timed_out),
        cost_usd=sum(r.cost_usd for r in billed),
        tokens_in=sum(r.tokens_in for r in billed),
        tokens_out=sum(r.tokens_out for r in billed),
    )
    if member:
        return park_member(app, result, ttl_s=get_runtime().settings.result_expires_s)
    return result.model_dump(mode="json")
