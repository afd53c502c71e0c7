"""What a finished job returns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from routing.decision import EXPLAINED_ONLY, RoutingDecision
from workers.tiers import Tier


class Attempt(BaseModel):
    """A call that failed, or was refused before it was made, ahead of the one that answered
    (or before the job gave up)."""

    model: str
    tier: Tier
    error_kind: str
    error: str
    called: bool = Field(default=True, description="False: refused before the call was made.")
    cost_usd: float = Field(default=0.0, description="What the failed call was billed.")
    round: int = Field(default=0, description="How many times the job had waited (requeued).")


class CascadeReport(BaseModel):
    """How a cascade went: the cheap model's answer kept, or escalated to the strong one."""

    first_model: str
    strong_model: str
    escalated: bool
    reason: str | None = Field(default=None, description="Why the cheap answer was not kept.")
    cost_usd: float = Field(description="What the cascade cost: every call it made.")
    strong_only_usd: float = Field(description="The strong model's price for the same answer.")
    saved_usd: float = Field(description="strong_only_usd - cost_usd; negative if it escalated.")


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


Outcome = AgentResult | MemberFailure | TeamResult
TeamResult.model_rebuild()


def outcome_from(data: dict[str, Any]) -> Outcome:
    """A member's outcome from its JSON form."""
    if data.get("status") != "succeeded":
        return MemberFailure.model_validate(data)
    if "pattern" in data:
        return TeamResult.model_validate(data)
    return AgentResult.model_validate(data)
