"""Jobs: defaults, named complexity and every way a job can be invalid."""

from __future__ import annotations

import pytest

from agents.job import COMPLEXITY_NAMES, Job, parse_job
from workers.errors import InvalidJob, MalformedMessage
from workers.tiers import Tier


def job_data(**fields) -> dict:
    """A valid job as a producer sends it, with overrides."""
    data = {"agent": "writer", "input": "Write a haiku about queues."}
    data.update(fields)
    return data


def test_valid_job_gets_the_defaults() -> None:
    job = parse_job(job_data())

    assert job.agent == "writer"
    assert job.input == "Write a haiku about queues."
    assert job.tier is None
    assert job.complexity is None
    assert job.max_cost_usd is None
    assert job.max_latency_s is None
    assert job.min_quality is None
    assert job.tenant == "default"
    assert job.priority == 5
    assert job.idempotency_key is None
    assert job.metadata == {}


def test_every_field_is_read() -> None:
    job = parse_job(
        job_data(
            tier="premium",
            complexity=0.3,
            max_cost_usd=0.01,
            max_latency_s=2.5,
            min_quality=0.8,
            tenant="acme.eu:prod-1",
            priority=9,
            idempotency_key="order-42",
            metadata={"source": "api", "retries": 1, "flag": True, "note": None},
        )
    )

    assert job.tier is Tier.PREMIUM
    assert (job.complexity, job.max_cost_usd, job.max_latency_s) == (0.3, 0.01, 2.5)
    assert (job.min_quality, job.tenant, job.priority) == (0.8, "acme.eu:prod-1", 9)
    assert job.metadata["retries"] == 1


@pytest.mark.parametrize(("name", "value"), [("low", 0.2), ("medium", 0.5), ("HIGH", 0.85)])
def test_named_complexity(name: str, value: float) -> None:
    assert parse_job(job_data(complexity=name)).complexity == value
    assert COMPLEXITY_NAMES[name.lower()] == value


def test_job_is_frozen() -> None:
    job = parse_job(job_data())

    with pytest.raises(ValueError, match="frozen"):
        job.priority = 1  # type: ignore[misc]


def test_a_job_instance_passes_through() -> None:
    job = Job(agent="writer", input="x")

    assert parse_job(job) is job


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input", ""),
        ("input", "   \n\t"),
        ("max_cost_usd", -1),
        ("max_cost_usd", 0),
        ("max_cost_usd", "cheap"),
        ("max_cost_usd", True),
        ("max_latency_s", False),
        ("min_quality", True),
        ("min_quality", 1.5),
        ("complexity", "extreme"),
        ("complexity", 1.1),
        ("tier", "gold"),
        ("priority", 10),
        ("priority", -1),
        ("tenant", "has space"),
        ("tenant", ""),
        ("tenant", "x" * 65),
        ("agent", ""),
        ("metadata", {"nested": {"a": 1}}),
    ],
)
def test_invalid_field_names_itself(field: str, value: object) -> None:
    # When
    with pytest.raises(InvalidJob) as caught:
        parse_job(job_data(**{field: value}))

    # Then
    error = caught.value
    assert type(error) is InvalidJob
    assert error.field is not None
    assert error.field.split(".")[0] == field
    assert field in str(error)


def test_extra_field_is_named() -> None:
    with pytest.raises(InvalidJob) as caught:
        parse_job(job_data(colour="blue"))

    assert caught.value.field == "colour"
    assert "colour" in str(caught.value)


@pytest.mark.parametrize("missing", ["agent", "input"])
def test_missing_required_field_is_named(missing: str) -> None:
    data = job_data()
    del data[missing]

    with pytest.raises(InvalidJob) as caught:
        parse_job(data)

    assert caught.value.field == missing


def test_every_problem_is_listed() -> None:
    with pytest.raises(InvalidJob) as caught:
        parse_job(job_data(priority=42, tier="gold"))

    assert "priority" in str(caught.value)
    assert "tier" in str(caught.value)


def test_invalid_message_from_a_queue_is_malformed() -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_job(job_data(priority=99), from_queue=True)

    assert caught.value.field == "priority"


@pytest.mark.parametrize("data", [["writer", "x"], "a job", None, 42])
def test_non_object_is_invalid(data: object) -> None:
    with pytest.raises(InvalidJob, match="JSON object") as caught:
        parse_job(data)

    assert type(caught.value) is InvalidJob
    assert caught.value.field is None


def test_non_object_from_a_queue_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="JSON object"):
        parse_job("not a job", from_queue=True)


@pytest.mark.parametrize(
    "data",
    [{"input": "x"}, {"agent": "writer", "team": "research", "input": "x"}],
    ids=["neither", "both"],
)
def test_job_names_exactly_one_agent_or_team(data: dict) -> None:
    with pytest.raises(InvalidJob, match="exactly one of agent or team") as refused:
        parse_job(data)
    assert refused.value.field == "agent"


def test_team_job_targets_its_team() -> None:
    job = parse_job({"team": "research", "input": "x"})

    assert (job.agent, job.team, job.target) == (None, "research", "research")


def test_seconds_left_counts_down_to_the_deadline() -> None:
    job = parse_job({"agent": "writer", "input": "x", "deadline_at": 100.0})

    assert job.seconds_left(40.0) == 60.0
    assert job.seconds_left(130.0) == -30.0
    assert parse_job({"agent": "writer", "input": "x"}).seconds_left(40.0) is None
