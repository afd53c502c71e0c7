"""Team jobs as Celery canvases: chords whose header members route themselves.

Each member is the router task in *member* mode: it replaces itself with the agent task on the
tier its own routing chose, and a failure after its retries is returned as a
:class:`~agents.result.MemberFailure` instead of raised, so the chord's join always completes
and the aggregator sees which members failed. The job's id follows every ``Task.replace`` down
to the last task, :data:`~workers.tiers.TEAM_FINALIZE_TASK`, whose :class:`TeamResult` is the
job's result.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task, chain, chord

from agents import tree
from agents.budget import aggregator_budget, share_budget, spent
from agents.job import Job, parse_job
from agents.members import load_members
from agents.result import AgentResult, MemberFailure, TeamResult
from agents.run import Runtime, get_runtime
from agents.tasks import ChordalTask, route_signature
from agents.team import (
    aggregator_input,
    ensemble_jobs,
    map_jobs,
    member_job,
    plan_jobs,
    revision_jobs,
)
from workers import watchdog
from workers.app import app
from workers.errors import AgentFailed
from workers.tiers import (
    TEAM_AGGREGATE_TASK,
    TEAM_FANOUT_TASK,
    TEAM_FINALIZE_TASK,
    TEAM_ROUND_TASK,
)


def team_canvas(job: Job, runtime: Runtime, *, root: str) -> Any:
    """The canvas that runs team ``job`` (whose id is ``root``); its last task returns the
    TeamResult."""
    team = runtime.agents.get_team(job.team or "")
    if team.deadline_s is not None and job.deadline_at is None:
        deadline_at = time.time() + team.deadline_s
        job = job.model_copy(update={"deadline_at": deadline_at})
        watchdog.watch(
            app, root, deadline_at=deadline_at, grace_s=runtime.settings.watchdog_grace_s
        )
    team_job = job.model_dump(mode="json")
    if team.pattern == "plan_execute":
        planner_job = member_job(job, agent=team.planner, text=job.input, index=-1).model_copy(
            update={"max_cost_usd": job.max_cost_usd}
        )
        (planner,) = _tracked([planner_job], root=root, phase="planner", runtime=runtime)
        return chain(planner, app.signature(TEAM_FANOUT_TASK, kwargs={"team_job": team_job}))
    members = map_jobs(team, job) if team.pattern == "map_reduce" else ensemble_jobs(team, job)
    rounds_after = team.rounds if team.pattern == "debate" else 0
    members = share_budget(
        job, members, aggregator=team.aggregator, already_spent=0.0, rounds_after=rounds_after,
        runtime=runtime,
    )  # fmt: skip
    if team.pattern == "debate":
        body = app.signature(
            TEAM_ROUND_TASK, kwargs={"team_job": team_job, "round_no": 1, "earlier": []}
        )
        return _chord(members, body, root=root, phase="round 0", runtime=runtime)
    phase = "map" if team.pattern == "map_reduce" else "member"
    return _fan_out(members, team_job, root=root, phase=phase, runtime=runtime)


def _tracked(
    jobs: list[Job], *, root: str, phase: str, runtime: Runtime, member: bool = False
) -> list[Any]:
    """Router signatures for ``jobs``, with their task ids fixed and written to the job's tree."""
    signatures = [route_signature(job, runtime=runtime, member=member) for job in jobs]
    entries = [
        {"task_id": sig.freeze().id, "agent": job.target, "phase": phase, "index": index}
        for index, (sig, job) in enumerate(zip(signatures, jobs, strict=True))
    ]
    tree.record(app, root, entries, ttl_s=runtime.settings.result_expires_s)
    return signatures


def _chord(members: list[Job], body: Any, *, root: str, phase: str, runtime: Runtime) -> Any:
    header = _tracked(members, root=root, phase=phase, runtime=runtime, member=True)
    return chord(header, body)


def _fan_out(
    members: list[Job],
    team_job: dict[str, Any],
    *,
    root: str,
    phase: str,
    runtime: Runtime,
    planner: Any = None,
    earlier: list[dict[str, Any]] | None = None,
) -> Any:
    body = app.signature(
        TEAM_AGGREGATE_TASK,
        kwargs={"team_job": team_job, "planner": planner, "earlier": earlier or []},
    )
    return _chord(members, body, root=root, phase=phase, runtime=runtime)


def _root(task: Task) -> str:
    return str(task.request.root_id or task.request.id)


@app.task(name=TEAM_ROUND_TASK, bind=True, base=ChordalTask)
def debate_round(
    self: Task,
    previous: list[dict[str, Any]],
    team_job: dict[str, Any],
    round_no: int,
    earlier: list[dict[str, Any]],
) -> Any:
    """Start debate round ``round_no`` over the previous round's answers (the last goes to
    the judge)."""
    runtime = get_runtime()
    job = parse_job(team_job, from_queue=True)
    team = runtime.agents.get_team(job.team or "")
    revisions = revision_jobs(team, job, load_members(app, previous), round_no=round_no)
    history = [*earlier, *previous]
    revisions = share_budget(
        job, revisions, aggregator=team.aggregator, already_spent=spent(history),
        rounds_after=team.rounds - round_no, runtime=runtime,
    )  # fmt: skip
    root, phase = _root(self), f"round {round_no}"
    if round_no < team.rounds:
        body = app.signature(
            TEAM_ROUND_TASK,
            kwargs={"team_job": team_job, "round_no": round_no + 1, "earlier": history},
        )
        return self.replace(_chord(revisions, body, root=root, phase=phase, runtime=runtime))
    last = _fan_out(revisions, team_job, root=root, phase=phase, runtime=runtime, earlier=history)
    return self.replace(last)


@app.task(name=TEAM_FANOUT_TASK, bind=True, base=ChordalTask)
def fan_out_plan(self: Task, planner: dict[str, Any], team_job: dict[str, Any]) -> Any:
    """Build the chord of a plan_execute team from its planner's plan."""
    runtime = get_runtime()
    job = parse_job(team_job, from_queue=True)
    team = runtime.agents.get_team(job.team or "")
    members = plan_jobs(team, job, planner.get("structured") or {}, set(runtime.agents.names()))
    if not members:
        raise AgentFailed(f"team {team.name}: the planner returned no steps")
    members = share_budget(
        job, members, aggregator=team.aggregator, already_spent=spent([planner]), runtime=runtime
    )
    canvas = _fan_out(
        members, team_job, root=_root(self), phase="step", runtime=runtime, planner=planner
    )
    return self.replace(canvas)


@app.task(name=TEAM_AGGREGATE_TASK, bind=True, base=ChordalTask)
def aggregate(
    self: Task,
    members: list[dict[str, Any]],
    team_job: dict[str, Any],
    planner: dict[str, Any] | None = None,
    earlier: list[dict[str, Any]] | None = None,
) -> Any:
    """Check ``min_success``, then hand every member's answer to the aggregator agent.

    ``earlier`` holds a debate's previous rounds: reported and billed, not aggregated.
    """
    runtime = get_runtime()
    job = parse_job(team_job, from_queue=True)
    team = runtime.agents.get_team(job.team or "")
    outcomes = load_members(app, members)
    succeeded = [m for m in outcomes if m.get("status") == "succeeded"]
    if len(succeeded) < team.min_success:
        failures = "; ".join(
            f"[{i}] {m['agent']}: {m['error_kind']}: {m['error']}"
            for i, m in enumerate(members, start=1)
            if m.get("status") != "succeeded"
        )
        msg = (
            f"team {team.name}: {len(succeeded)} of {len(members)} members succeeded, "
            f"{team.min_success} required. Failed members: {failures}"
        )
        raise AgentFailed(msg)
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
    finish = app.signature(
        TEAM_FINALIZE_TASK,
        kwargs={"team_job": team_job, "members": [*(earlier or []), *members], "planner": planner},
    )
    (combine,) = _tracked([aggregator_job], root=_root(self), phase="aggregator", runtime=runtime)
    return self.replace(chain(combine, finish))


@app.task(name=TEAM_FINALIZE_TASK, bind=True, base=ChordalTask)
def finalize(
    self: Task,
    aggregator: dict[str, Any],
    team_job: dict[str, Any],
    members: list[dict[str, Any]],
    planner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The team's result: the aggregator's answer, every member's outcome, the totals."""
    job = parse_job(team_job, from_queue=True)
    team = get_runtime().agents.get_team(job.team or "")
    outcomes: list[AgentResult | MemberFailure] = [
        AgentResult.model_validate(m) if m.get("status") == "succeeded"
        else MemberFailure.model_validate(m)
        for m in load_members(app, members)
    ]  # fmt: skip
    answered = [o for o in outcomes if isinstance(o, AgentResult)]
    timed_out = [o for o in outcomes if isinstance(o, MemberFailure) and o.status == "timed_out"]
    final = AgentResult.model_validate(aggregator)
    planned = AgentResult.model_validate(planner) if planner else None
    billed = [*answered, final, *([planned] if planned else [])]
    return TeamResult(
        job_id=self.request.id,
        team=team.name,
        pattern=team.pattern,
        tenant=job.tenant,
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
    ).model_dump(mode="json")
