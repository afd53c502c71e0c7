"""Teams: several agents coordinated by Celery chords, in one of four patterns.

- ``ensemble``: the same input to every member in parallel, then an aggregator.
- ``map_reduce``: the input split into chunks, a mapper agent over each chunk, then a reducer.
- ``plan_execute``: a planner returns a plan (subtasks, each with an agent), a chord is built
  from the plan at run time, and a synthesizer combines the results.
- ``debate``: proposers answer, then ``rounds`` rounds in which each proposer sees every answer
  of the round before and revises its own (each round a chord), then a judge (the aggregator).

This module is the plain part: specs, the built-in teams, and the member jobs and prompts a
pattern needs. :mod:`agents.team_tasks` turns them into Celery canvases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.job import Job, MetadataValue
from workers.tiers import Tier

Pattern = Literal["ensemble", "map_reduce", "plan_execute", "debate"]
MAX_MEMBERS = 500


class Member(BaseModel):
    """One seat in an ensemble or debate: an agent (optionally pinned to a tier or complexity),
    or a whole team."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str | None = Field(default=None, min_length=1)
    team: str | None = Field(default=None, min_length=1, description="A nested team.")
    tier: Tier | None = None
    complexity: float | None = Field(default=None, ge=0, le=1)
    instruction: str | None = Field(default=None, description="Said to this member only.")
    cascade: Literal["schema", "critic"] | None = Field(
        default=None, description="Cheap model first, strong one only if the answer fails."
    )

    @model_validator(mode="after")
    def _agent_or_team(self) -> Member:
        if (self.agent is None) == (self.team is None):
            raise ValueError("a member names exactly one of agent or team")
        routed = (self.tier, self.complexity, self.cascade)
        if self.team is not None and any(value is not None for value in routed):
            raise ValueError(
                "a team member routes each of its own members: no tier/complexity/cascade"
            )
        return self


class TeamSpec(BaseModel):
    """A team definition, from Python or YAML (``teams:`` in an agents file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    description: str = Field(min_length=1)
    pattern: Pattern
    members: list[Member] = Field(default_factory=list, description="ensemble/debate seats")
    rounds: int = Field(default=1, ge=1, le=10, description="debate: rounds of critique")
    mapper: str | None = Field(default=None, description="map_reduce: agent run on each chunk")
    chunk_chars: int = Field(default=4_000, ge=200, description="map_reduce chunk size")
    planner: str = Field(default="planner", description="plan_execute: the planning agent")
    default_agent: str = Field(
        default="researcher", description="plan_execute: runs steps naming an unknown agent"
    )
    aggregator: str = Field(description="Combines the members' answers (reducer, synthesizer).")
    aggregator_tier: Tier | None = None
    min_success: int = Field(default=1, ge=1, description="Members that must succeed.")
    deadline_s: float | None = Field(
        default=None, gt=0, description="Members still running then are recorded as timed out."
    )

    @model_validator(mode="after")
    def _pattern_fields(self) -> TeamSpec:
        if self.pattern in {"ensemble", "debate"} and not self.members:
            raise ValueError(f"a {self.pattern} team needs members")
        if self.pattern in {"ensemble", "debate"} and self.min_success > len(self.members):
            raise ValueError(f"min_success {self.min_success} exceeds {len(self.members)} members")
        if self.pattern == "map_reduce" and not self.mapper:
            raise ValueError("a map_reduce team needs a mapper agent")
        return self

    def agent_names(self) -> set[str]:
        """Every agent the definition names (plans may name more at run time)."""
        named = {self.aggregator, *(m.agent for m in self.members if m.agent)}
        if self.pattern == "map_reduce" and self.mapper:
            named.add(self.mapper)
        if self.pattern == "plan_execute":
            named |= {self.planner, self.default_agent}
        return named

    def team_names(self) -> set[str]:
        """The teams nested in this one as members."""
        return {m.team for m in self.members if m.team}


BUILTIN_TEAMS: tuple[TeamSpec, ...] = (
    TeamSpec(
        name="research",
        description="A researcher, an analyst and a critic answer in parallel; a writer combines.",
        pattern="ensemble",
        members=[
            Member(agent="researcher", tier=Tier.FAST),
            Member(agent="analyst", tier=Tier.BALANCED),
            Member(agent="critic", tier=Tier.PREMIUM),
        ],
        aggregator="writer",
        min_success=2,
    ),
    TeamSpec(
        name="research-local",
        description="The research team plus a researcher on the local model, whose answer costs "
        "nothing and never leaves the machine (needs the local tier: --local-model).",
        pattern="ensemble",
        members=[
            Member(agent="researcher", tier=Tier.FAST),
            Member(agent="analyst", tier=Tier.BALANCED),
            Member(agent="critic", tier=Tier.PREMIUM),
            Member(agent="researcher", tier=Tier.LOCAL),
        ],
        aggregator="writer",
        # Four answers make a prompt too long for a small local model's context window.
        aggregator_tier=Tier.FAST,
        min_success=2,
    ),
    TeamSpec(
        name="debate",
        description="Two analysts and a critic propose, revise over one round, a judge decides.",
        pattern="debate",
        members=[Member(agent="analyst"), Member(agent="analyst"), Member(agent="critic")],
        rounds=1,
        aggregator="analyst",
        aggregator_tier=Tier.PREMIUM,
    ),
    TeamSpec(
        name="digest",
        description="Summarises a long text chunk by chunk, then summarises the summaries.",
        pattern="map_reduce",
        mapper="summarizer",
        aggregator="summarizer",
    ),
    TeamSpec(
        name="project",
        description="A planner breaks the goal into steps for other agents; a writer synthesises.",
        pattern="plan_execute",
        aggregator="writer",
    ),
)


def member_job(
    team_job: Job,
    *,
    agent: str | None,
    text: str,
    team: str | None = None,
    tier: Tier | None = None,
    complexity: float | None = None,
    index: int,
    round_no: int | None = None,
    bound: bool = True,
    cascade: Literal["schema", "critic"] | None = None,
) -> Job:
    """A member's own job: the team's constraints, tenant and (if ``bound``) deadline, its own
    agent (or nested team) and input."""
    labels: dict[str, MetadataValue] = {"team": team_job.team, "member": index}
    if round_no is not None:
        labels["round"] = round_no
    return Job(
        agent=agent,
        team=team,
        input=text,
        tier=tier,
        complexity=complexity,
        max_latency_s=team_job.max_latency_s,
        deadline_at=team_job.deadline_at if bound else None,
        min_quality=team_job.min_quality,
        tenant=team_job.tenant,
        priority=team_job.priority,
        metadata={**team_job.metadata, **labels},
        cascade=cascade,
        stream=team_job.stream,
    )


def ensemble_jobs(team: TeamSpec, team_job: Job, *, round_no: int | None = None) -> list[Job]:
    """One job per seat, each with the team's input (and the seat's instruction, if any)."""
    return [
        member_job(
            team_job,
            agent=seat.agent,
            team=seat.team,
            text=f"{seat.instruction}\n\n{team_job.input}" if seat.instruction else team_job.input,
            tier=seat.tier,
            complexity=seat.complexity,
            index=index,
            round_no=round_no,
            cascade=seat.cascade,
        )
        for index, seat in enumerate(team.members)
    ]


def first_jobs(team: TeamSpec, team_job: Job) -> list[Job]:
    """The members a team starts with: its planner, its chunks' mappers, or its seats."""
    if team.pattern == "plan_execute":
        planner = member_job(team_job, agent=team.planner, text=team_job.input, index=-1)
        return [planner.model_copy(update={"max_cost_usd": team_job.max_cost_usd})]
    if team.pattern == "map_reduce":
        return map_jobs(team, team_job)
    return ensemble_jobs(team, team_job, round_no=0 if team.pattern == "debate" else None)


def split_chunks(text: str, *, size: int) -> list[str]:
    """Split ``text`` into chunks of at most ``size`` characters, at paragraph or word breaks."""
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > size:
        # Prefer a paragraph break, then a word break, in the chunk's second half.
        cut = rest.rfind("\n\n", 0, size)
        if cut <= size // 2:
            cut = rest.rfind(" ", 0, size)
        if cut <= size // 2:
            cut = size
        chunks.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        chunks.append(rest)
    return chunks


def map_jobs(team: TeamSpec, team_job: Job) -> list[Job]:
    """One mapper job per chunk of the team's input."""
    chunks = split_chunks(team_job.input, size=team.chunk_chars)
    return [
        member_job(
            team_job,
            agent=team.mapper or team.aggregator,
            text=f"Part {index + 1} of {len(chunks)}:\n\n{chunk}",
            index=index,
        )
        for index, chunk in enumerate(chunks)
    ]


def plan_jobs(team: TeamSpec, team_job: Job, plan: dict[str, Any], known: set[str]) -> list[Job]:
    """One job per plan step; a step naming an unknown agent goes to ``default_agent``."""
    steps: Sequence[dict[str, Any]] = plan.get("steps") or []
    return [
        member_job(
            team_job,
            agent=str(step["agent"]) if step.get("agent") in known else team.default_agent,
            text=f"Goal: {team_job.input}\n\nYour step: {step.get('instruction', '')}",
            index=index,
        )
        for index, step in enumerate(steps)
    ]


def revision_jobs(
    team: TeamSpec, team_job: Job, previous: Sequence[dict[str, Any]], *, round_no: int
) -> list[Job]:
    """Debate round ``round_no``: each seat sees the previous round's answers and revises."""
    answers = _answers_block(previous)
    return [
        member_job(
            team_job,
            agent=seat.agent,
            team=seat.team,
            text=(
                f"Task: {team_job.input}\n\nRound {round_no - 1} answers:\n{answers}\n\n"
                f"You gave answer [{index + 1}]. Critique the others, then give your revised "
                "answer."
            ),
            tier=seat.tier,
            complexity=seat.complexity,
            index=index,
            round_no=round_no,
            cascade=seat.cascade,
        )
        for index, seat in enumerate(team.members)
    ]


def _answers_block(members: Sequence[dict[str, Any]]) -> str:
    lines = []
    for index, member in enumerate(members, start=1):
        if member.get("status") != "succeeded":
            outcome = "TIMED OUT" if member.get("status") == "timed_out" else "FAILED"
            lines.append(f"[{index}] {member['agent']}: {outcome} ({member['error_kind']})")
        else:
            source = member.get("model") or f"team of {len(member.get('members', []))}"
            name = member.get("agent") or member.get("team")
            lines.append(f"[{index}] {name} ({source}):\n{member['output']}")
    return "\n".join(lines)


def aggregator_input(team_job: Job, members: Sequence[dict[str, Any]]) -> str:
    """The aggregator's prompt: the task and every member's answer, failures marked as such."""
    return (
        f"Task: {team_job.input}\n\nAnswers from the team's members:\n"
        f"{_answers_block(members)}\n\n"
        "Combine the successful answers into one answer. Ignore failed members."
    )
