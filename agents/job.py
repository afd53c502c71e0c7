"""A job: the unit producers submit. Validated before it is enqueued and again when consumed."""

from __future__ import annotations

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
from workers.tiers import Tier

COMPLEXITY_NAMES = {"low": 0.2, "medium": 0.5, "high": 0.85}
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
    tenant: str = Field(default="default", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    priority: int = Field(default=5, ge=0, le=9, description="9 is the most urgent.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

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


def parse_job(data: Any, *, from_queue: bool = False) -> Job:
    """A validated Job; raises InvalidJob (MalformedMessage off a queue) naming the field."""
    if isinstance(data, Job):
        return data
    error = MalformedMessage if from_queue else InvalidJob
    if not isinstance(data, dict):
        raise error(f"a job is a JSON object, got {type(data).__name__}", None)
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
