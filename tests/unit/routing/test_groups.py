"""Model groups: keys in the fleet's state, a group's face for scoring, and the deployment pick."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from routing.catalog import Catalog, Model
from routing.decision import RoutingDecision
from routing.groups import decided, faces, grouped, has_room, keyed, pick, state_keys
from routing.limits import Headroom
from workers.errors import ConfigurationError
from workers.tiers import Tier


def deployment(group: str, key: str, *, price: float = 1e-6, latency: float = 1.0,
               weight: float = 1.0, tier: Tier = Tier.FAST) -> Model:  # fmt: skip
    return Model(
        name=group,
        tier=tier,
        litellm_params={"model": f"openai/{group}", "api_base": f"http://{key}.example/v1"},
        price_model=group,
        input_cost_per_token=price,
        output_cost_per_token=price * 4,
        context_window=100_000,
        max_output_tokens=1_000,
        expected_latency_s=latency,
        quality_by_kind={"general": 0.7},
        deployment_id=key,
        weight=weight,
    )


EAST, WEST = deployment("gpt-x", "east"), deployment("gpt-x", "west")


def draws(deployments: list[Model], n: int = 4_000, **how: object) -> Counter[str]:
    rng = random.Random(7)
    return Counter(pick(deployments, rng=rng, **how).deployment_id for _ in range(n))  # type: ignore[arg-type]


def test_simple_shuffle_spreads_calls_in_proportion_to_weight() -> None:
    heavy = replace(WEST, weight=3.0)
    counts = draws([EAST, heavy])
    assert counts["west"] / counts["east"] == pytest.approx(3.0, rel=0.15)


def test_equal_weights_spread_evenly() -> None:
    counts = draws([EAST, WEST])
    assert counts["east"] == pytest.approx(2_000, rel=0.1)


def test_least_busy_picks_the_deployment_with_fewest_calls_in_flight() -> None:
    counts = draws([EAST, WEST], strategy="least-busy", in_flight={"east": 7, "west": 2})
    assert counts == {"west": 4_000}


def test_least_busy_breaks_ties_by_weight() -> None:
    counts = draws([EAST, replace(WEST, weight=3.0)], strategy="least-busy", in_flight={})
    assert counts["west"] / counts["east"] == pytest.approx(3.0, rel=0.15)


def test_a_deployment_whose_rate_limit_is_full_is_skipped_while_another_has_room() -> None:
    assert draws([EAST, WEST], full={"east"}) == {"west": 4_000}
    # least-busy too: room comes before the count
    assert draws([EAST, WEST], strategy="least-busy", full={"west"}, in_flight={"east": 9}) == {
        "east": 4_000
    }


def test_when_every_deployment_is_full_all_stay_candidates() -> None:
    counts = draws([EAST, WEST], full={"east", "west"})
    assert set(counts) == {"east", "west"}


def test_picking_from_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no eligible deployment"):
        pick([])


def test_room_means_no_block_a_request_left_and_enough_tokens() -> None:
    def room(requests: int | None, tokens: int | None, blocked: float = 0.0) -> Headroom:
        return Headroom(requests=requests, tokens=tokens, blocked_for_s=blocked)

    assert has_room(None, tokens=10_000)
    assert has_room(room(1, None), tokens=10_000)
    assert not has_room(room(0, None), tokens=1)
    assert has_room(room(None, 500), tokens=500)
    assert not has_room(room(None, 499), tokens=500)
    assert not has_room(room(5, 5_000, blocked=2.0), tokens=1)


def test_a_group_is_scored_by_its_cheapest_deployment_with_latency_blended_by_weight() -> None:
    cheap = replace(EAST, input_cost_per_token=1e-7, expected_latency_s=3.0)
    fast = replace(WEST, expected_latency_s=1.0, weight=3.0)
    other = deployment("gpt-y", "gpt-y", latency=2.0)

    (group, alone) = faces(
        [cheap, other, fast],
        cost=lambda m: m.input_cost_per_token,
        p50=lambda m: m.expected_latency_s,
        live=lambda m: m.deployment_id == "west",
    )

    assert (group.model.deployment_id, group.deployments) == ("east", (cheap, fast))
    assert group.p50 == pytest.approx((3.0 + 3 * 1.0) / 4)
    assert group.live
    assert (alone.model, alone.p50, alone.live) == (other, 2.0, False)


def test_a_model_with_one_deployment_is_keyed_by_its_name_unless_it_has_an_id() -> None:
    lone = deployment("gpt-y", "gpt-y#1a2b3c4d")
    named = deployment("gpt-z", "zed-eu")  # model_info.id: zed-eu
    catalog = keyed(Catalog(models=(EAST, lone, WEST, named), profile="offline"))

    assert [m.deployment_id for m in catalog.models] == ["east", "gpt-y", "west", "zed-eu"]
    assert catalog.deployments_of("gpt-x") == (EAST, WEST)
    assert catalog.deployment("west") == WEST
    assert list(grouped(catalog.models)) == ["gpt-x", "gpt-y", "gpt-z"]
    assert state_keys(
        [("gpt-x", "east"), ("gpt-y", "gpt-y#1a2b3c4d"), ("gpt-x", "west"), ("gpt-z", "zed-eu")]
    ) == ["east", "gpt-y", "west", "zed-eu"]


def test_deployments_sharing_an_id_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="share the id east"):
        keyed(Catalog(models=(EAST, replace(WEST, deployment_id="east")), profile="offline"))


def test_a_group_across_tiers_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'gpt-x' are in tiers balanced, fast"):
        keyed(Catalog(models=(EAST, replace(WEST, tier=Tier.BALANCED)), profile="offline"))


def test_a_decision_names_its_deployment_or_an_old_one_its_groups_first() -> None:
    catalog = Catalog(models=(EAST, WEST), profile="offline")
    decision = RoutingDecision(
        model="gpt-x", tier=Tier.FAST, task_kind="general", complexity=0.5, prompt_tokens=10,
        max_output_tokens=10, expected_cost_usd=0.0, max_cost_usd=0.0, reason="test",
    )  # fmt: skip

    assert decided(catalog, decision) == EAST
    assert decided(catalog, decision.model_copy(update={"deployment": "west"})) == WEST
    assert decided(catalog, decision.model_copy(update={"deployment": "gone"})) == EAST
