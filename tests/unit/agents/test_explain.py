"""The explain record (``agents.explain``) against a real Valkey."""

from __future__ import annotations

from celery import Celery

from agents import explain
from routing.decision import RoutingDecision
from workers.tiers import Tier


def decision(model: str) -> RoutingDecision:
    return RoutingDecision(
        model=model, tier=Tier.FAST, task_kind="general", complexity=0.2, prompt_tokens=10,
        max_output_tokens=100, expected_cost_usd=0.001, max_cost_usd=0.002, reason="cheapest",
    )  # fmt: skip


def test_the_first_decision_is_the_first_links(app: Celery) -> None:
    # Given: a job routed once, then re-routed
    explain.record(app, "job-1", decision("first-model"), ttl_s=60)
    explain.record(app, "job-1", decision("rerouted-model"), ttl_s=60)

    # Then: a redelivered first link finds the decision it ran on; an unknown job finds none
    assert explain.first(app, "job-1") == decision("first-model")
    assert explain.first(app, "job-unknown") is None
    assert [d["model"] for d in explain.read(app, "job-1")] == ["first-model", "rerouted-model"]
