"""What the router decided and why: part of every job's result."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from workers.tiers import Tier


class CandidateScore(BaseModel):
    """One model group the router weighed (scored by its cheapest eligible deployment)."""

    model: str
    tier: Tier
    quality: float
    expected_cost_usd: float
    max_cost_usd: float
    expected_latency_s: float
    latency_source: Literal["live", "catalog"] = "catalog"
    score: float
    # Where the quality and the tier came from (routing/catalog.py): the entry, Chordal's table
    # or nowhere; the entry or the price.
    quality_source: Literal["catalog", "table", "unknown"] = "catalog"
    tier_source: Literal["catalog", "inferred"] = "catalog"
    deployments: int = Field(default=1, description="The group's eligible deployments.")


class RoutingDecision(BaseModel):
    """The chosen deployment, the constraints applied and how every candidate scored."""

    model: str
    tier: Tier
    deployment: str | None = Field(
        default=None,
        description="The deployment of the model group `model` to call (routing.groups); "
        "None in a decision made before groups: the group's first.",
    )
    task_kind: str
    complexity: float
    prompt_tokens: int
    max_output_tokens: int
    expected_cost_usd: float
    max_cost_usd: float
    reason: str
    excluded: list[str] = Field(
        default_factory=list, description="Models and deployments already tried."
    )
    candidates: list[CandidateScore] = Field(
        default_factory=list, description="The best-scoring candidates, best first."
    )
    notes: list[str] = Field(
        default_factory=list, description="What live state changed: spills, downgrades, skips."
    )
    cascade: list[str] = Field(
        default_factory=list, description="Stronger models to escalate to if the answer fails."
    )


# What a decision carries only in its job's `chordal explain` record (agents.explain), not in
# the messages and results that follow it: every candidate's scores and the live-state notes.
EXPLAINED_ONLY: set[str] = {"candidates", "notes"}
