"""What a finished job returns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from routing.decision import RoutingDecision
from workers.tiers import Tier


class Attempt(BaseModel):
    """A call that failed before the one that answered (or before the job gave up)."""

    model: str
    tier: Tier
    error_kind: str
    error: str


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
    cost_usd: float = Field(description="LiteLLM's price for the tokens used, USD.")
    latency_s: float = Field(description="Time in the LLM call, seconds.")
    attempts: int = Field(description="Calls made, including failed ones.")
    failed_attempts: list[Attempt] = Field(default_factory=list)
    decision: RoutingDecision


class MemberFailure(BaseModel):
    """A team member that failed after its retries: data for the aggregator, not an exception."""

    status: Literal["failed", "timed_out"] = "failed"
    job_id: str
    agent: str
    error_kind: str
    error: str
    failed_attempts: list[Attempt] = Field(default_factory=list)


class TeamResult(BaseModel):
    """A team's final answer with every member's outcome."""

    job_id: str
    team: str
    pattern: str
    tenant: str
    output: str
    structured: dict[str, Any] | None = None
    aggregator: AgentResult
    members: list[AgentResult | MemberFailure]
    planner: AgentResult | None = None
    succeeded: int
    failed: int
    timed_out: int = 0
    cost_usd: float = Field(description="Every member's, the planner's and the aggregator's.")
    tokens_in: int
    tokens_out: int
