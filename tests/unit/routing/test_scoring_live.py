"""Routing on live state: measured latency, open breakers, budgets, saturated queues."""

from __future__ import annotations

import math

import pytest

from routing.catalog import Catalog, Model
from routing.latency import LatencyEstimate
from routing.scoring import LiveState, RouteRequest, choose
from workers.errors import BudgetExceeded, CircuitOpen, NoEligibleModel
from workers.tiers import Tier


def model(name: str, tier: Tier, quality: float, price: float, latency: float) -> Model:
    return Model(
        name=name,
        tier=tier,
        litellm_params={"model": f"openai/{name}"},
        price_model=name,
        input_cost_per_token=price,
        output_cost_per_token=price * 4,
        context_window=100_000,
        max_output_tokens=1_000,
        expected_latency_s=latency,
        quality_by_kind={"general": quality},
    )


CATALOG = Catalog(
    models=(
        model("cheap", Tier.FAST, 0.60, 1e-7, 0.8),
        model("mid", Tier.BALANCED, 0.80, 1e-6, 1.5),
        model("mid-b", Tier.BALANCED, 0.78, 1.2e-6, 1.2),
        model("top", Tier.PREMIUM, 0.97, 1e-5, 3.0),
    ),
    profile="offline",
)


def request(live: LiveState | None = None, **fields: object) -> RouteRequest:
    values: dict[str, object] = {
        "prompt_tokens": 1_000, "max_output_tokens": 1_000, "expected_output_tokens": 100,
    }  # fmt: skip
    values.update(fields)
    return RouteRequest(live=live or LiveState(), **values)  # type: ignore[arg-type]


def live_latency(**p95: float) -> dict[str, LatencyEstimate]:
    return {
        name: LatencyEstimate(p50=value / 2, p95=value, samples=10, source="live")
        for name, value in p95.items()
    }


def test_measured_p95_rules_a_model_out_of_a_latency_limit_its_seed_would_meet() -> None:
    # Given: mid's catalog seed is 1.5 s, but it has been answering in 4 s at p95
    live = LiveState(latency=live_latency(mid=4.0, **{"mid-b": 0.9}))

    decision = choose(request(live, tier=Tier.BALANCED, max_latency_s=2.0), CATALOG)

    assert decision.model == "mid-b"
    assert {c.model: c.latency_source for c in decision.candidates} == {"mid-b": "live"}


def test_latency_limit_that_no_measured_model_meets_names_the_fastest_p95() -> None:
    live = LiveState(latency=live_latency(mid=4.0, **{"mid-b": 3.0}))

    with pytest.raises(NoEligibleModel, match=r"fastest model's p95 is 3.000 s \(mid-b\)"):
        choose(request(live, tier=Tier.BALANCED, max_latency_s=2.0), CATALOG)


def test_open_breakers_are_skipped_and_said_so() -> None:
    live = LiveState(open_breakers={"top": 4.0})

    decision = choose(request(live, complexity=0.95), CATALOG)

    assert decision.model != "top"
    assert "skipped (circuit breaker open): top" in decision.notes


def test_every_candidate_open_is_retry_later_with_the_soonest_wait() -> None:
    live = LiveState(open_breakers={"mid": 6.0, "mid-b": 2.5})

    with pytest.raises(CircuitOpen) as caught:
        choose(request(live, tier=Tier.BALANCED), CATALOG)

    assert caught.value.retry_after == 2.5
    assert "mid-b (retry in 2.5 s)" in str(caught.value)


def test_a_breaker_held_open_by_an_operator_gives_no_wait() -> None:
    live = LiveState(open_breakers={"top": math.inf})

    with pytest.raises(CircuitOpen) as caught:
        choose(request(live, tier=Tier.PREMIUM), CATALOG)

    assert caught.value.retry_after is None


def test_budget_downgrades_and_says_from_what() -> None:
    # Given: a complex job that wants "top" (worst case ~$0.05) with $0.01 of budget left
    live = LiveState(budget_usd=0.01, budget_label="tenant acme daily budget ($5.0)")

    decision = choose(request(live, complexity=0.95), CATALOG)

    assert decision.model != "top"
    assert decision.max_cost_usd <= 0.01
    assert any(n.startswith("downgraded from top (premium)") for n in decision.notes)
    assert "tenant acme daily budget" in decision.notes[0]


def test_budget_that_covers_no_model_is_budget_exceeded_naming_it() -> None:
    live = LiveState(budget_usd=1e-6, budget_label="tenant acme daily budget ($5.0)")

    with pytest.raises(BudgetExceeded, match=r"the tenant acme daily budget \(\$5.0\) allows"):
        choose(request(live), CATALOG)


def test_saturated_tier_spills_an_unpinned_job_to_another_tier() -> None:
    live = LiveState(saturated={Tier.PREMIUM: "queue depth 5000"})

    decision = choose(request(live, complexity=0.95), CATALOG)

    assert decision.tier is not Tier.PREMIUM
    assert decision.notes == [f"spilled from top (premium: queue depth 5000) to {decision.tier}"]


def test_a_pinned_job_does_not_spill() -> None:
    live = LiveState(saturated={Tier.PREMIUM: "queue depth 5000"})

    decision = choose(request(live, complexity=0.95, tier=Tier.PREMIUM), CATALOG)

    assert decision.model == "top"
    assert decision.notes == []
