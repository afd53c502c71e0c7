"""What a finished job returns.

With ``CHORDAL_STORE_REDACTED`` on, the JSON form of these models (``model_dump(mode="json")``,
which :meth:`AgentResult.as_json` uses) holds their text redacted: answers, structured values,
metadata and error messages. Every result stored, member parked and failed member handed to its
team is that form, so the setting takes effect here for all of them; in memory the models hold
the text as it came.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_serializer

from routing.decision import EXPLAINED_ONLY, RoutingDecision
from workers.observability.redaction import redact_value
from workers.settings import get_settings
from workers.tiers import Tier


def stored_text(value: Any) -> Any:
    """``value`` as Chordal stores it: redacted when ``store_redacted`` is on."""
    return redact_value(value) if get_settings().store_redacted else value


class Attempt(BaseModel):
    """A call that failed, or was refused before it was made, ahead of the one that answered
    (or before the job gave up)."""

    model: str
    tier: Tier
    error_kind: str
    error: str
    deployment: str | None = Field(default=None, description="The deployment of `model` tried.")
    scope: Literal["model", "deployment"] = Field(
        default="model",
        description="What the failure rules out for the job: the whole model (its answer, its "
        "price), or only this deployment (an outage, a limit, a breaker): the job then fails "
        "over to another deployment of the model first.",
    )
    called: bool = Field(default=True, description="False: refused before the call was made.")
    cost_usd: float = Field(default=0.0, description="What the failed call was billed.")
    round: int = Field(default=0, description="How many times the job had waited (requeued).")

    # Provider errors quote the provider's answer, which may quote the prompt.
    @field_serializer("error", when_used="json")
    def _stored_error(self, error: str) -> Any:
        return stored_text(error)


class CascadeReport(BaseModel):
    """How a cascade went: the cheap model's answer kept, or escalated to the strong one."""

    first_model: str
    strong_model: str
    escalated: bool
    reason: str | None = Field(default=None, description="Why the cheap answer was not kept.")
    cost_usd: float = Field(description="What the cascade cost: every call it made.")
    strong_only_usd: float = Field(description="The strong model's price for the same answer.")
    saved_usd: float = Field(description="strong_only_usd - cost_usd; negative if it escalated.")

    # A critic's reason may quote the answer it judged.
    @field_serializer("reason", when_used="json")
    def _stored_reason(self, reason: str | None) -> Any:
        return stored_text(reason)


class AgentResult(BaseModel):
    """An agent's answer with the model that gave it and what it cost."""

    status: Literal["succeeded"] = "succeeded"
    job_id: str
    agent: str
    tenant: str
    metadata: dict[str, Any] = Field(default_factory=dict, description="As submitted.")
    output: str
    structured: dict[str, Any] | None = None
    model: str
    deployment: str | None = Field(
        default=None, description="The deployment of `model` that answered (routing.groups)."
    )
    tier: Tier
    tokens_in: int
    tokens_out: int
    cost_usd: float = Field(
        description="LiteLLM's price for every call the job made (failed ones billed too), USD."
    )
    latency_s: float = Field(description="Time in the LLM call, seconds.")
    attempts: int = Field(description="Calls made, including failed ones.")
    failed_attempts: list[Attempt] = Field(default_factory=list)
    decision: RoutingDecision
    cascade: CascadeReport | None = None

    @field_serializer("output", "structured", "metadata", when_used="json")
    def _stored(self, value: Any) -> Any:
        return stored_text(value)

    def as_json(self) -> dict[str, Any]:
        """The result as stored: its decision without what only the explain record keeps."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude={"decision": EXPLAINED_ONLY})
        return data


class MemberFailure(BaseModel):
    """A team member that failed after its retries: data for the aggregator, not an exception."""

    status: Literal["failed", "timed_out"] = "failed"
    job_id: str
    agent: str = Field(description="The member's agent, or its team for a nested team.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Team, seat and round.")
    error_kind: str
    error: str
    failed_attempts: list[Attempt] = Field(default_factory=list)

    @field_serializer("error", "metadata", when_used="json")
    def _stored(self, value: Any) -> Any:
        return stored_text(value)


class TeamResult(BaseModel):
    """A team's final answer with every member's outcome (a member may be a team itself)."""

    status: Literal["succeeded"] = "succeeded"
    job_id: str
    team: str
    pattern: str
    tenant: str
    output: str
    structured: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="As submitted.")
    aggregator: AgentResult
    members: list[Outcome]
    planner: AgentResult | None = None
    succeeded: int
    failed: int
    timed_out: int = 0
    cost_usd: float = Field(description="Every member's, the planner's and the aggregator's.")
    tokens_in: int
    tokens_out: int

    @field_serializer("output", "structured", "metadata", when_used="json")
    def _stored(self, value: Any) -> Any:
        return stored_text(value)


Outcome = AgentResult | MemberFailure | TeamResult
TeamResult.model_rebuild()


def outcome_from(data: dict[str, Any]) -> Outcome:
    """A member's outcome from its JSON form."""
    if data.get("status") != "succeeded":
        return MemberFailure.model_validate(data)
    if "pattern" in data:
        return TeamResult.model_validate(data)
    return AgentResult.model_validate(data)
