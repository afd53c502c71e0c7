"""Admission of one call through the fleet's shared state, against a real Valkey."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import redis

from routing.catalog import Model
from routing.fleet import Fleet
from routing.ledger import LedgerRow
from tests.support import FLEET_CALL as CALL
from tests.support import FLEET_MODEL as MODEL
from workers.errors import BudgetExceeded, Cancelled, CircuitOpen, ProviderTimeout, RateLimited
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
    # The timed-out call counts as a latency sample and costs its worst case (it may have been
    # billed); the refused one costs nothing.
    assert fleet.latency.estimates({"m": 1.0})["m"].samples == 1
    assert fleet.budgets.usage(tenant="acme").spent_usd == pytest.approx(0.005)


def test_invalid_output_is_billed_but_not_held_against_the_model(fleet: Fleet) -> None:
    from workers.errors import InvalidOutput

    held = admit(fleet, model=replace(MODEL, rpm=None))
    fleet.failed(held, InvalidOutput("not JSON"), latency_s=0.2, cost_usd=0.001)

    assert fleet.budgets.usage(tenant="acme").spent_usd == pytest.approx(0.001)
    assert fleet.breakers.state("m").failures == 0


def test_every_call_that_reached_the_provider_is_in_the_cost_ledger(fleet: Fleet) -> None:
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
    # The timeout is charged its worst case, and marked as uncertain.
    assert row.cost_usd == pytest.approx(0.001 + 0.005)
    assert (row.uncertain, row.uncertain_cost_usd) == (1, pytest.approx(0.005))


def test_headroom_is_the_tightest_budget_after_spending(fleet: Fleet) -> None:
    fleet.succeeded(
        admit(fleet, job="j"), latency_s=0.1, tokens_in=10, tokens_out=0, cost_usd=0.002
    )

    tenant = fleet.headroom(tenant="acme", job_id="j", job_budget_usd=None)
    job = fleet.headroom(tenant="acme", job_id="j", job_budget_usd=0.003)
    unlisted = fleet.headroom(tenant="other", job_id="k", job_budget_usd=None)

    assert tenant == (pytest.approx(0.010), "tenant acme daily budget ($0.012)")
    assert job == (pytest.approx(0.001), "job budget ($0.003)")
    # Budgets are in force: a tenant nobody listed has none.
    assert unlisted[0] == 0.0
    assert "none: not in CHORDAL_TENANT_BUDGETS_USD" in unlisted[1]


def test_without_any_budget_every_tenant_is_unlimited() -> None:
    assert Settings().tenant_budget_usd("anyone") is None
    listed = Settings(tenant_budgets_usd={"acme": 2.0})
    assert (listed.tenant_budget_usd("acme"), listed.tenant_budget_usd("x")) == (2.0, 0.0)
    default = Settings(tenant_budgets_usd={"acme": 2.0}, default_tenant_budget_usd=0.5)
    assert default.tenant_budget_usd("x") == 0.5


def today_row(fleet: Fleet) -> LedgerRow:
    (row,) = fleet.ledger.rows(since_day=datetime.now(UTC).date())
    return row


def test_a_call_cancelled_after_sending_is_charged_its_worst_case(fleet: Fleet) -> None:
    # Given: a call admitted ($0.005 worst case, 2,000 tokens in the TPM window)
    held = admit(fleet, model=replace(MODEL, tpm=10_000))

    # When: it is cancelled after its request went out
    fleet.uncertain(held, Cancelled("job cancelled"), latency_s=0.3)

    # Then: the worst case is spent, the rate limit keeps the tokens, the ledger marks it
    usage = fleet.budgets.usage(tenant="acme")
    assert (usage.spent_usd, usage.reserved_usd) == (pytest.approx(0.005), 0)
    assert fleet.limits.headroom("m", rpm=2, tpm=10_000) == {
        "requests": 1, "tokens": 8_000, "blocked_for_s": 0.0,
    }  # fmt: skip
    row = today_row(fleet)
    assert (row.requests, row.errors, row.uncertain) == (1, 1, 1)
    assert row.cost_usd == row.uncertain_cost_usd == pytest.approx(0.005)
    # A cancel says nothing about the model: not a failure, not even a call of its breaker.
    assert fleet.breakers.state("m").calls == 0
    assert fleet.latency.estimates({"m": 1.0})["m"].samples == 0


def test_an_uncertain_timeout_counts_against_the_breaker(fleet: Fleet) -> None:
    free = replace(MODEL, rpm=None)

    # When: two calls time out (the test breaker opens at 2 calls, half failed)
    for job in ("a", "b"):
        fleet.uncertain(admit(fleet, model=free, job=job), ProviderTimeout("x"), latency_s=9.0)

    # Then: the breaker opened, and both worst cases are spent
    assert fleet.breakers.state("m").state == "open"
    assert fleet.budgets.usage(tenant="acme").spent_usd == pytest.approx(0.010)
    assert today_row(fleet).uncertain == 2


@pytest.mark.parametrize(
    "error", [ProviderTimeout("no answer in 30s"), Cancelled("job cancelled")], ids=type
)
def test_failed_cannot_refund_a_call_whose_outcome_is_unknown(
    fleet: Fleet, error: Exception
) -> None:
    # When: a caller reports a timeout or a cancel as an ordinary failure
    fleet.failed(admit(fleet, model=replace(MODEL, rpm=None)), error, latency_s=1.0)

    # Then: it is recorded as uncertain all the same: charged, not refunded
    assert fleet.budgets.usage(tenant="acme").spent_usd == pytest.approx(0.005)
    assert today_row(fleet).uncertain == 1


def test_a_call_cancelled_before_sending_gives_everything_back(fleet: Fleet) -> None:
    held = admit(fleet)

    fleet.abandoned(held)

    usage = fleet.budgets.usage(tenant="acme")
    assert (usage.spent_usd, usage.reserved_usd) == (0, 0)
    assert fleet.limits.headroom("m", rpm=2, tpm=None)["requests"] == 2
    assert fleet.ledger.rows(since_day=datetime.now(UTC).date()) == []


def test_an_outcome_recorded_twice_is_charged_once(fleet: Fleet) -> None:
    # Given: a call recorded as answered
    held = admit(fleet)
    fleet.succeeded(held, latency_s=0.4, tokens_in=100, tokens_out=10, cost_usd=0.001)

    # When: the same outcome is recorded again, then another outcome for the same call
    fleet.succeeded(held, latency_s=0.4, tokens_in=100, tokens_out=10, cost_usd=0.001)
    fleet.uncertain(held, ProviderTimeout("late"), latency_s=30.0)

    # Then: the budget and the ledger counted the first one only
    assert fleet.budgets.usage(tenant="acme").spent_usd == pytest.approx(0.001)
    row = today_row(fleet)
    assert (row.requests, row.uncertain, row.cost_usd) == (1, 0, pytest.approx(0.001))
