"""A job: the unit producers submit. Validated before it is enqueued and again when consumed."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from workers.errors import InvalidJob, MalformedMessage
from workers.settings import TENANT_PATTERN, Settings, get_settings
from workers.tiers import HIGH_COMPLEXITY, QUALITY_TIERS, Tier

COMPLEXITY_NAMES = {"low": 0.2, "medium": 0.5, "high": HIGH_COMPLEXITY}
MetadataValue = str | int | float | bool | None


class Job(BaseModel):
    """What to run and under which constraints; every field but ``agent`` and ``input`` optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str | None = Field(default=None, min_length=1, description="A registered agent.")
    team: str | None = Field(default=None, min_length=1, description="Or a registered team.")
    input: str = Field(description="The text the agent works on.")
    tier: Tier | None = Field(default=None, description="Pin the job to one tier.")
    complexity: float | Literal["auto", "classify"] | None = Field(
        default=None,
        description="0-1 or low/medium/high; auto: estimated from the input; classify: the "
        "classifier agent labels it first; unset: the agent's default.",
    )
    cascade: Literal["schema", "critic"] | None = Field(
        default=None,
        description="Try a cheap model first and escalate to a strong one only if its answer "
        "fails the check: schema (valid structured output) or critic (and a critic accepts).",
    )
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_latency_s: float | None = Field(default=None, gt=0)
    deadline_at: float | None = Field(
        default=None, gt=0, description="Unix time by which the job must end (teams set it)."
    )
    min_quality: float | None = Field(default=None, ge=0, le=1)
    tenant: str = Field(default="default", pattern=TENANT_PATTERN)
    priority: int = Field(default=5, ge=0, le=9, description="9 is the most urgent.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    stream: bool = Field(
        default=False,
        description="Stream the answer's tokens into the job's events as they arrive (a team's: "
        "every member's, each tagged with its member).",
    )

    @model_validator(mode="after")
    def _agent_or_team(self) -> Job:
        if (self.agent is None) == (self.team is None):
            raise ValueError("give exactly one of agent or team")
        return self

    def seconds_left(self, now: float) -> float | None:
        """Seconds until the deadline (negative once past), or None without one."""
        return None if self.deadline_at is None else self.deadline_at - now

    @property
    def target(self) -> str:
        """The agent or team the job runs."""
        return self.agent or self.team or ""

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input must not be empty")
        return value

    @field_validator("complexity", mode="before")
    @classmethod
    def _named_complexity(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in COMPLEXITY_NAMES:
            return COMPLEXITY_NAMES[value.lower()]
        if isinstance(value, int | float) and not isinstance(value, bool) and not 0 <= value <= 1:
            raise ValueError("complexity lies between 0 and 1")
        return value

    @field_validator("max_cost_usd", "max_latency_s", "min_quality", "complexity", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # pydantic reads True as 1.0; a boolean budget is a mistake, not a number.
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value


def parse_job(data: Any, *, from_queue: bool = False, settings: Settings | None = None) -> Job:
    """A validated Job; raises InvalidJob (MalformedMessage off a queue) naming the field.

    The size bounds (``max_input_bytes``, ``max_metadata_bytes``, ``max_json_depth`` of
    ``settings``, the process's by default) are checked first, so an oversize job costs no more
    than a glance before it is refused.
    """
    error = MalformedMessage if from_queue else InvalidJob
    limits = settings or get_settings()
    if isinstance(data, Job):
        _check_size(data.input, data.metadata, limits, error)
        return data
    if not isinstance(data, dict):
        raise error(f"a job is a JSON object, got {type(data).__name__}", None)
    _check_depth(data, limits.max_json_depth, error)
    _check_size(data.get("input"), data.get("metadata"), limits, error)
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or (
            "agent" if "agent or team" in first["msg"] else None
        )
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'job'}: {err['msg']}" for err in exc.errors()
        )
        raise error(f"invalid job: {details}", field) from None


def _check_depth(data: dict[str, Any], limit: int, error: type[InvalidJob]) -> None:
    # Iterative, and it stops at the first container past the limit: a hostile message nested
    # a million deep must cost neither a RecursionError nor a walk of the rest.
    pending: list[tuple[Any, int, str]] = [(value, 2, str(key)) for key, value in data.items()]
    while pending:
        value, depth, field = pending.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth > limit:
            raise error(f"{field} nests deeper than {limit} levels (max_json_depth)", field)
        pending.extend((child, depth + 1, field) for child in children if _is_container(child))


def _is_container(value: Any) -> bool:
    return isinstance(value, dict | list | tuple)


def _check_size(text: Any, metadata: Any, limits: Settings, error: type[InvalidJob]) -> None:
    if isinstance(text, str) and utf8_size(text, limits.max_input_bytes) > limits.max_input_bytes:
        raise error(f"input is over {limits.max_input_bytes} bytes (max_input_bytes)", "input")
    if isinstance(metadata, dict) and metadata:
        size = json_size(metadata, limits.max_metadata_bytes)
        if size is not None and size > limits.max_metadata_bytes:
            msg = f"metadata is over {limits.max_metadata_bytes} bytes as JSON (max_metadata_bytes)"
            raise error(msg, "metadata")


def utf8_size(text: str, limit: int) -> int:
    """The UTF-8 size of ``text``, exact when it matters: any size over ``limit`` means "over".

    A character is 1 to 4 bytes, so most texts are decided by their length alone; only those
    in between are encoded.
    """
    if len(text) > limit:
        return len(text)
    if 4 * len(text) <= limit:
        return len(text)
    # surrogatepass: a lone surrogate (valid in JSON text) counts, rather than raising.
    return len(text.encode("utf-8", "surrogatepass"))


def json_size(value: Any, limit: int) -> int | None:
    """Bytes of ``value`` as compact UTF-8 JSON, counted until ``limit`` is passed.

    None when it is not JSON at all (pydantic then names what is wrong with it).
    """
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    size = 0
    try:
        for chunk in encoder.iterencode(value):
            size += len(chunk.encode("utf-8", "surrogatepass"))
            if size > limit:
                return size
    except (TypeError, ValueError):
        return None
    return size


def goes_straight_to_its_tier(job: Job) -> bool:
    """Whether ``job`` can skip the router: one agent pinned to a provider tier, with nothing
    for the router to do first (a team's canvas, a classifier call). The local tier keeps the
    router, which fails a job at once where the tier is off instead of queueing it for a worker
    that does not exist."""
    return job.team is None and job.tier in QUALITY_TIERS and job.complexity != "classify"
