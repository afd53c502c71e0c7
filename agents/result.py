"""What a finished job returns."""

from __future__ import annotations

from typing import Any

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
