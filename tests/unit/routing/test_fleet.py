"""Admission of one call through the fleet's shared state, against a real Valkey."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import redis

from routing.catalog import Model
from routing.fleet import Fleet
from tests.support import FLEET_CALL as CALL
from tests.support import FLEET_MODEL as MODEL
from workers.errors import BudgetExceeded, CircuitOpen, ProviderTimeout, RateLimited
from workers.settings import Settings


@pytest.fixture
def fleet(connect: Callable[[], redis.Redis]) -> Fleet:
    settings = Settings(
        broker_url="redis://unused",
        tenant_budgets_usd={"acme": 0.012},
        breaker_min_calls=2,
        breaker_open_s=30,
    )
    return Fleet(connect(), settings)


def admit(fleet: Fleet, model: Model = MODEL, job: str = "job-1", **call: object):
    return fleet.admit(model, tenant="acme", job_id=job, **{**CALL, **call})  # type: ignore[arg-type]


def test_a_call_reserves_then_settles_its_real_cost(fleet: Fleet) -> None:
    held = admit(fleet)
    assert fleet.budgets.usage(tenant="acme").reserved_usd == pytest.approx(0.005)

    fleet.succeeded(held, latency_s=0.4, tokens_in=1_100, tokens_out=0, cost_usd=0.0012)

    usage = fleet.budgets.usage(tenant="acme")
    assert (usage.spent_usd, usage.reserved_usd) == (pytest.approx(0.0012), 0)
    assert fleet.breakers.state("m").calls == 1


def test_budget_refusal_takes_nothing(fleet: Fleet) -> None:
    admit(fleet, job="a")
    admit(fleet, job="b")  # $0.010 of $0.012 reserved

    with pytest.raises(BudgetExceeded, match="tenant acme daily budget"):
        admit(fleet, model=replace(MODEL, rpm=None), job="c")

    assert fleet.budgets.usage(tenant="acme").reserved_usd == pytest.approx(0.010)


def test_fleet_rate_limit_refusal_gives_the_budget_back(fleet: Fleet) -> None:
    for job in ("a", "b"):
        fleet.succeeded(
            admit(fleet, job=job), latency_s=0.1, tokens_in=10, tokens_out=0, cost_usd=0.0
        )

    with pytest.raises(RateLimited) as caught:
        admit(fleet, job="c")

    assert caught.value.retry_after is not None
    assert fleet.budgets.usage(tenant="acme").reserved_usd == 0


def test_open_breaker_refuses_and_gives_back_the_limit_slot_and_budget(fleet: Fleet) -> None:
    free = replace(MODEL, rpm=None)
    fleet.breakers.force_open("m", seconds=30)

    with pytest.raises(CircuitOpen, match="m: circuit breaker open") as caught:
        admit(fleet, model=free)

    assert 0 < (caught.value.retry_after or 0) <= 30
    assert fleet.budgets.usage(tenant="acme").reserved_usd == 0


def test_retryable_failures_open_the_breaker_and_a_429_blocks_the_model(fleet: Fleet) -> None:
    free = replace(MODEL, rpm=None)
    fleet.failed(admit(fleet, model=free, job="a"), ProviderTimeout("slow"), latency_s=20.0)
    fleet.failed(admit(fleet, model=free, job="b"), RateLimited("429", 5.0), latency_s=0.1)

    assert fleet.breakers.state("m").state == "open"
    assert fleet.limits.headroom("m", rpm=None, tpm=None)["blocked_for_s"] > 4
    # The timed-out call counts as a latency sample; the refused ones cost nothing.
    assert fleet.latency.estimates({"m": 1.0})["m"].samples == 1
    assert fleet.budgets.usage(tenant="acme").spent_usd == 0


def test_invalid_output_is_billed_but_not_held_against_the_model(fleet: Fleet) -> None:
    from workers.errors import InvalidOutput

    held = admit(fleet, model=replace(MODEL, rpm=None))
    fleet.failed(held, InvalidOutput("not JSON"), latency_s=0.2, cost_usd=0.001)

    assert fleet.budgets.usage(tenant="acme").spent_usd == pytest.approx(0.001)
    assert fleet.breakers.state("m").failures == 0


def test_every_call_that_reached_the_provider_is_in_the_cost_ledger(fleet: Fleet) -> None:
    from datetime import UTC, datetime

    free = replace(MODEL, rpm=None)
    fleet.succeeded(
        admit(fleet, model=free, job="a", agent="writer"), latency_s=0.5, tokens_in=100,
        tokens_out=20, cost_usd=0.001,
    )  # fmt: skip
    fleet.failed(
        admit(fleet, model=free, job="b", agent="writer"), ProviderTimeout("x"), latency_s=2
    )

    (row,) = fleet.ledger.rows(since_day=datetime.now(UTC).date())
    assert (row.tenant, row.model, row.agent, row.tier) == ("acme", "m", "writer", "fast")
    assert (row.requests, row.errors, row.tokens_in, row.tokens_out) == (2, 1, 100, 20)
    assert row.cost_usd == pytest.approx(0.001)


def test_headroom_is_the_tightest_budget_after_spending(fleet: Fleet) -> None:
    fleet.succeeded(
        admit(fleet, job="j"), latency_s=0.1, tokens_in=10, tokens_out=0, cost_usd=0.002
    )

    tenant = fleet.headroom(tenant="acme", job_id="j", job_budget_usd=None)
    job = fleet.headroom(tenant="acme", job_id="j", job_budget_usd=0.003)
    free = fleet.headroom(tenant="other", job_id="k", job_budget_usd=None)

    assert tenant == (pytest.approx(0.010), "tenant acme daily budget ($0.012)")
    assert job == (pytest.approx(0.001), "job budget ($0.003)")
    assert free == (None, "")
