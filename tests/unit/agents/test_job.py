"""Jobs: defaults, named complexity and every way a job can be invalid."""

from __future__ import annotations

import pytest

from agents.job import COMPLEXITY_NAMES, Job, parse_job
from workers.errors import InvalidJob, MalformedMessage
from workers.settings import Settings
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


def limits(**bounds: int) -> Settings:
    """Settings with small size bounds, so a test needs no megabytes."""
    return Settings(**bounds)


@pytest.mark.parametrize(("from_queue", "error"), [(False, InvalidJob), (True, MalformedMessage)])
def test_input_over_the_byte_limit_is_refused_naming_input(
    from_queue: bool, error: type[InvalidJob]
) -> None:
    # Given a limit of 100 bytes and 34 three-byte characters (34 characters, 102 bytes)
    data = job_data(input="€" * 34)

    # When it is parsed
    with pytest.raises(error) as caught:
        parse_job(data, from_queue=from_queue, settings=limits(max_input_bytes=100))

    # Then it is refused for its UTF-8 size, naming the field
    assert type(caught.value) is error
    assert caught.value.field == "input"
    assert "input is over 100 bytes" in str(caught.value)


@pytest.mark.parametrize("text", ["€" * 33, "x" * 100, "x" * 25], ids=["99-bytes", "100", "25"])
def test_input_within_the_byte_limit_is_accepted(text: str) -> None:
    assert parse_job(job_data(input=text), settings=limits(max_input_bytes=100)).input == text


def test_default_input_limit_is_one_mebibyte() -> None:
    assert len(parse_job(job_data(input="x" * 1_048_576)).input) == 1_048_576
    with pytest.raises(MalformedMessage, match="input is over 1048576 bytes"):
        parse_job(job_data(input="x" * 2 * 1_048_576), from_queue=True)


def test_oversize_input_is_refused_before_anything_else_is_checked() -> None:
    # The size is checked first: what is wrong besides it waits for a job of a sane size.
    data = job_data(input="x" * 101, priority=42, surprise=True)

    with pytest.raises(InvalidJob) as caught:
        parse_job(data, settings=limits(max_input_bytes=100))

    assert caught.value.field == "input"


def test_metadata_over_its_limit_is_refused_naming_metadata() -> None:
    # Given metadata of exactly 40 bytes as compact JSON: {"note":"…"} is 11 bytes + the text
    at_limit = {"note": "é" * 14 + "x"}  # 11 + 28 + 1 bytes
    over = {"note": "é" * 15}  # 11 + 30 bytes

    # Then the one at the limit passes and the one over it is refused
    assert parse_job(job_data(metadata=at_limit), settings=limits(max_metadata_bytes=40))
    with pytest.raises(MalformedMessage) as caught:
        parse_job(job_data(metadata=over), from_queue=True, settings=limits(max_metadata_bytes=40))
    assert caught.value.field == "metadata"
    assert "metadata is over 40 bytes" in str(caught.value)


def test_metadata_that_is_not_json_is_left_to_validation() -> None:
    with pytest.raises(InvalidJob) as caught:
        parse_job(job_data(metadata={"tags": {"a", "b"}}))

    assert caught.value.field.startswith("metadata")
    assert "over" not in str(caught.value)


@pytest.mark.parametrize("depth", [5, 100_000])
def test_nesting_deeper_than_the_limit_is_refused_naming_the_field(depth: int) -> None:
    # Given metadata nested `depth` lists deep (the job is level 1, metadata level 2)
    nested: object = "bottom"
    for _ in range(depth):
        nested = [nested]

    # When it comes off a queue
    with pytest.raises(MalformedMessage) as caught:
        parse_job(
            job_data(metadata={"deep": nested}), from_queue=True, settings=limits(max_json_depth=4)
        )

    # Then it is refused for its depth, without a RecursionError
    assert caught.value.field == "metadata"
    assert "nests deeper than 4 levels" in str(caught.value)


def test_nesting_at_the_limit_goes_on_to_validation() -> None:
    # Depth 4 (job, metadata, list, list) is allowed; pydantic then refuses the lists.
    with pytest.raises(InvalidJob) as caught:
        parse_job(job_data(metadata={"deep": [["x"]]}), settings=limits(max_json_depth=4))

    assert "nests deeper" not in str(caught.value)
    assert caught.value.field.startswith("metadata")


def test_a_job_instance_is_held_to_the_same_bounds() -> None:
    job = Job(agent="writer", input="x" * 101)

    with pytest.raises(InvalidJob, match="input is over 100 bytes"):
        parse_job(job, settings=limits(max_input_bytes=100))
