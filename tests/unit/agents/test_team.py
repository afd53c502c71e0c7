"""Team definitions and the member jobs and prompts each pattern builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.job import Job
from agents.registry import AgentRegistry
from agents.team import (
    BUILTIN_TEAMS,
    Member,
    TeamSpec,
    aggregator_input,
    ensemble_jobs,
    map_jobs,
    member_job,
    plan_jobs,
    revision_jobs,
    split_chunks,
)
from workers.errors import ConfigurationError, UnknownAgent
from workers.tiers import Tier


def team(**fields) -> TeamSpec:
    values = {
        "name": "t",
        "description": "a team",
        "pattern": "ensemble",
        "members": [Member(agent="researcher"), Member(agent="analyst", tier=Tier.PREMIUM)],
        "aggregator": "writer",
    }
    values.update(fields)
    return TeamSpec(**values)


TEAM_JOB = Job(team="t", input="the question", tenant="acme", priority=7, max_latency_s=30)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"members": []}, "needs members"),
        ({"min_success": 3}, "exceeds 2 members"),
        ({"pattern": "map_reduce", "members": []}, "needs a mapper"),
        ({"pattern": "choir"}, "pattern"),
        ({"pattern": "debate", "members": []}, "a debate team needs members"),
        ({"pattern": "debate", "rounds": 0}, "rounds"),
        ({"chunk_chars": 10}, "chunk_chars"),
    ],
)
def test_invalid_team_is_rejected(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        team(**fields)


def test_ensemble_gives_every_seat_the_team_input_and_constraints() -> None:
    jobs = ensemble_jobs(team(members=[Member(agent="critic", instruction="Be harsh.")]), TEAM_JOB)

    (only,) = jobs
    assert only.agent == "critic"
    assert only.input == "Be harsh.\n\nthe question"
    assert (only.tenant, only.priority, only.max_latency_s) == ("acme", 7, 30)
    assert only.metadata == {"team": "t", "member": 0}


def test_ensemble_keeps_each_seats_tier() -> None:
    jobs = ensemble_jobs(team(), TEAM_JOB)

    assert [(j.agent, j.tier) for j in jobs] == [("researcher", None), ("analyst", Tier.PREMIUM)]


@pytest.mark.parametrize("size", [200, 500, 1000])
def test_split_chunks_respects_the_size_and_loses_no_words(size: int) -> None:
    text = "\n\n".join(f"Paragraph {n}: " + "word " * 70 for n in range(12))

    chunks = split_chunks(text, size=size)

    assert all(len(chunk) <= size for chunk in chunks)
    assert " ".join(chunks).split() == text.split()


def test_split_chunks_prefers_paragraph_breaks() -> None:
    paragraphs = ["alpha " * 40, "beta " * 40, "gamma " * 40]

    chunks = split_chunks("\n\n".join(p.strip() for p in paragraphs), size=300)

    assert chunks == [p.strip() for p in paragraphs]


def test_split_chunks_of_short_text_is_one_chunk() -> None:
    assert split_chunks("  short  ", size=200) == ["short"]


def test_map_jobs_number_their_parts() -> None:
    spec = team(pattern="map_reduce", members=[], mapper="summarizer", chunk_chars=200)
    job = Job(team="t", input="word " * 200)

    jobs = map_jobs(spec, job)

    assert len(jobs) > 1
    assert {j.agent for j in jobs} == {"summarizer"}
    assert jobs[0].input.startswith(f"Part 1 of {len(jobs)}:")


def test_plan_jobs_use_known_agents_and_fall_back_for_unknown_ones() -> None:
    spec = team(pattern="plan_execute", members=[])
    plan = {"steps": [{"agent": "coder", "instruction": "build"}, {"agent": "wizard"}]}

    jobs = plan_jobs(spec, TEAM_JOB, plan, known={"coder", "researcher"})

    assert [j.agent for j in jobs] == ["coder", "researcher"]
    assert "Your step: build" in jobs[0].input
    assert "Goal: the question" in jobs[1].input


def test_aggregator_input_marks_failed_members() -> None:
    members = [
        {"status": "succeeded", "agent": "researcher", "model": "m1", "output": "facts"},
        {"status": "failed", "agent": "analyst", "error_kind": "ProviderUnavailable"},
    ]

    prompt = aggregator_input(TEAM_JOB, members)

    assert prompt.startswith("Task: the question")
    assert "[1] researcher (m1):\nfacts" in prompt
    assert "[2] analyst: FAILED (ProviderUnavailable)" in prompt


def test_revision_jobs_show_each_seat_the_previous_round() -> None:
    spec = team(pattern="debate", rounds=2)
    previous = [
        {"status": "succeeded", "agent": "researcher", "model": "m1", "output": "answer one"},
        {"status": "failed", "agent": "analyst", "error_kind": "RateLimited"},
    ]

    jobs = revision_jobs(spec, TEAM_JOB, previous, round_no=2)

    assert [(j.agent, j.tier) for j in jobs] == [("researcher", None), ("analyst", Tier.PREMIUM)]
    assert "Round 1 answers:" in jobs[0].input
    assert "[1] researcher (m1):\nanswer one" in jobs[1].input
    assert "[2] analyst: FAILED (RateLimited)" in jobs[0].input
    assert "You gave answer [2]" in jobs[1].input


def test_builtin_teams_cover_the_four_patterns_and_name_known_agents() -> None:
    registry = AgentRegistry.load()

    assert {t.pattern for t in BUILTIN_TEAMS} == {
        "ensemble",
        "map_reduce",
        "plan_execute",
        "debate",
    }
    assert registry.team_names() == sorted(t.name for t in BUILTIN_TEAMS)


def test_unknown_team_lists_the_known_ones() -> None:
    with pytest.raises(UnknownAgent, match="unknown team 'x'; known teams: debate, digest") as err:
        AgentRegistry.load().get_team("x")
    assert err.value.field == "team"


def test_team_naming_an_unknown_agent_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "teams.yaml"
    path.write_text(
        "teams:\n"
        "  - {name: bad, description: d, pattern: ensemble, aggregator: writer,\n"
        "     members: [{agent: ghost}]}\n"
    )

    with pytest.raises(ConfigurationError, match="unknown agents: ghost"):
        AgentRegistry.load(path)


def test_yaml_team_can_use_a_yaml_agent(tmp_path: Path) -> None:
    path = tmp_path / "extra.yaml"
    path.write_text(
        "agents:\n"
        "  - {name: poet, description: d, system_prompt: Write verse.}\n"
        "teams:\n"
        "  - {name: verse, description: d, pattern: ensemble, aggregator: poet,\n"
        "     members: [{agent: poet}, {agent: writer}]}\n"
    )

    registry = AgentRegistry.load(path)

    assert registry.get_team("verse").agent_names() == {"poet", "writer"}


def test_members_inherit_the_team_deadline_unless_unbound() -> None:
    job = Job(team="t", input="x", deadline_at=1_000.0)

    bound = ensemble_jobs(team(), job)[0]
    aggregator = member_job(job, agent="writer", text="combine", index=2, bound=False)

    assert bound.deadline_at == 1_000.0
    assert aggregator.deadline_at is None


def test_aggregator_input_marks_timed_out_members() -> None:
    members = [{"status": "timed_out", "agent": "critic", "error_kind": "DeadlineExceeded"}]

    assert "[1] critic: TIMED OUT (DeadlineExceeded)" in aggregator_input(TEAM_JOB, members)


def test_a_seat_is_an_agent_or_a_team_never_both() -> None:
    assert Member(team="research").team == "research"
    with pytest.raises(ValidationError, match="exactly one of agent or team"):
        Member(agent="writer", team="research")
    with pytest.raises(ValidationError, match="exactly one of agent or team"):
        Member()
    with pytest.raises(ValidationError, match="no tier/complexity"):
        Member(team="research", tier=Tier.FAST)


def test_debate_seats_are_labelled_with_their_round() -> None:
    spec = team(pattern="debate", rounds=2)

    first = ensemble_jobs(spec, TEAM_JOB, round_no=0)
    revised = revision_jobs(spec, TEAM_JOB, [], round_no=2)

    assert [j.metadata["round"] for j in [*first, *revised]] == [0] * len(first) + [2] * len(
        revised
    )


def test_a_seat_may_cascade_and_its_member_job_carries_it() -> None:
    spec = team(members=[Member(agent="critic", cascade="schema"), Member(agent="writer")])

    jobs = ensemble_jobs(spec, TEAM_JOB)
    revised = revision_jobs(spec, TEAM_JOB, [], round_no=1)

    assert [j.cascade for j in jobs] == ["schema", None]
    assert [j.cascade for j in revised] == ["schema", None]
