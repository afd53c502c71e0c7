"""The router over model groups: a group scored as one model, then one of its deployments."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from routing.catalog import Catalog, Model
from routing.latency import LatencyEstimate
from routing.limits import Headroom
from routing.scoring import LiveState, RouteRequest, choose
from workers.errors import CircuitOpen
from workers.tiers import Tier


def deployment(group: str, key: str, *, quality: float, price: float, latency: float = 1.0,
               rpm: int | None = None) -> Model:  # fmt: skip
    return Model(
        name=group,
        tier=Tier.FAST,
        litellm_params={"model": f"openai/{group}"},
        price_model=group,
        input_cost_per_token=price,
        output_cost_per_token=price * 4,
        context_window=100_000,
        max_output_tokens=1_000,
        expected_latency_s=latency,
        quality_by_kind={"general": quality},
        rpm=rpm,
        deployment_id=key,
    )


EAST = deployment("gpt-x", "east", quality=0.8, price=1e-6)
WEST = deployment("gpt-x", "west", quality=0.8, price=1e-6)
OTHER = deployment("gpt-y", "gpt-y", quality=0.6, price=5e-6)
CATALOG = Catalog(models=(EAST, WEST, OTHER), profile="offline")


def request(live: LiveState | None = None, **fields: object) -> RouteRequest:
    values: dict[str, object] = {
        "prompt_tokens": 1_000, "max_output_tokens": 500, "expected_output_tokens": 100,
        "complexity": 0.5,
    }  # fmt: skip
    values.update(fields)
    return RouteRequest(live=live or LiveState(), **values)  # type: ignore[arg-type]


def chosen(n: int = 400, catalog: Catalog = CATALOG, **fields: object) -> Counter[str]:
    return Counter(choose(request(**fields), catalog).deployment or "" for _ in range(n))


def test_a_group_is_one_candidate_and_its_deployments_share_the_traffic() -> None:
    decision = choose(request(), CATALOG)

    assert decision.model == "gpt-x"
    assert [(c.model, c.deployments) for c in decision.candidates] == [("gpt-x", 2), ("gpt-y", 1)]
    picked = [note for note in decision.notes if note.startswith("deployment ")]
    assert len(picked) == 1
    assert "simple-shuffle over 2 of 2 deployments" in picked[0]
    counts = chosen()
    assert set(counts) == {"east", "west"}
    assert min(counts.values()) > 120


def test_an_open_breaker_leaves_the_other_deployment_of_the_group() -> None:
    live = LiveState(open_breakers={"east": 5.0})

    assert chosen(live=live) == {"west": 400}
    decision = choose(request(live=live), CATALOG)
    assert "skipped (circuit breaker open): east" in decision.notes


def test_when_every_deployment_of_the_group_is_open_the_next_model_is_chosen() -> None:
    live = LiveState(open_breakers={"east": 5.0, "west": 2.0})

    assert choose(request(live=live), CATALOG).deployment == "gpt-y"
    with pytest.raises(CircuitOpen, match=r"east \(retry in 5.0 s\), west") as raised:
        choose(request(live=live), replace(CATALOG, models=(EAST, WEST)))
    assert raised.value.retry_after == 2.0


def test_an_excluded_deployment_leaves_its_group_eligible_and_an_excluded_group_does_not() -> None:
    assert chosen(exclude=frozenset({"east"})) == {"west": 400}
    assert chosen(exclude=frozenset({"gpt-x"})) == {"gpt-y": 400}


def test_a_failed_deployment_fails_over_within_its_group_before_a_better_model() -> None:
    # Given: a better model than gpt-x, so a plain re-route would leave the group
    best = deployment("gpt-z", "gpt-z", quality=0.99, price=1e-6)
    catalog = Catalog(models=(EAST, WEST, best), profile="offline")
    assert choose(request(complexity=1.0), catalog).model == "gpt-z"

    # When: east failed and the re-route prefers its group
    decision = choose(request(complexity=1.0, exclude=frozenset({"east"}), prefer="gpt-x"), catalog)

    # Then: west takes the job, and the decision says why
    assert (decision.model, decision.deployment) == ("gpt-x", "west")
    assert "failed over within gpt-x" in decision.notes
    # and once the group has nothing left, the job moves on
    both = frozenset({"east", "west"})
    assert choose(request(complexity=1.0, exclude=both, prefer="gpt-x"), catalog).model == "gpt-z"


def test_the_group_is_priced_by_its_cheapest_eligible_deployment() -> None:
    dear = replace(WEST, input_cost_per_token=1e-4, output_cost_per_token=4e-4)
    catalog = Catalog(models=(EAST, dear, OTHER), profile="offline")

    ranked = choose(request(), catalog).candidates[0]
    assert ranked.expected_cost_usd == pytest.approx(1_000 * 1e-6 + 100 * 4e-6)
    # when the cheap deployment's breaker is open, the dear one prices the group
    live = LiveState(open_breakers={"east": 5.0})
    decision = choose(request(live=live), replace(catalog, models=(EAST, dear)))
    assert decision.candidates[0].expected_cost_usd == pytest.approx(1_000 * 1e-4 + 100 * 4e-4)
    assert (decision.deployment, decision.max_cost_usd) == ("west", pytest.approx(0.3))


def test_the_groups_latency_blends_its_deployments() -> None:
    live = LiveState(latency={"east": LatencyEstimate(p50=0.5, p95=0.6, samples=10, source="live")})
    candidate = choose(request(live=live), CATALOG).candidates[0]
    assert (candidate.expected_latency_s, candidate.latency_source) == (0.75, "live")


def test_a_deployment_whose_limit_is_full_is_not_picked_while_the_other_has_room() -> None:
    east, west = replace(EAST, rpm=10), replace(WEST, rpm=10)
    catalog = Catalog(models=(east, west, OTHER), profile="offline")
    full = Headroom(requests=0, tokens=None, blocked_for_s=0.0)
    room = Headroom(requests=3, tokens=None, blocked_for_s=0.0)
    live = LiveState(headroom={"east": full, "west": room})

    assert chosen(catalog=catalog, live=live) == {"west": 400}
    notes = choose(request(live=live), catalog).notes
    assert any("rate limit full: east" in note for note in notes)


def test_least_busy_picks_the_deployment_with_fewer_calls_in_flight() -> None:
    live = LiveState(strategy="least-busy", in_flight={"east": 4, "west": 1})
    assert chosen(live=live) == {"west": 400}


def test_a_catalog_without_groups_decides_as_before() -> None:
    decision = choose(request(), replace(CATALOG, models=(OTHER,)))
    assert (decision.model, decision.deployment) == ("gpt-y", "gpt-y")
    assert not any(note.startswith("deployment ") for note in decision.notes)
