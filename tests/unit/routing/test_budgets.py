"""Tenant and job budgets that cannot be overshot, against a real Valkey server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import pytest
import redis

from routing.budgets import Budgets, Reservation, Usage
from workers.errors import BudgetExceeded

NOON = datetime(2025, 3, 14, 12, tzinfo=UTC).timestamp()


@pytest.fixture
def budgets(connect: Callable[[], redis.Redis]) -> Budgets:
    return Budgets(connect())


def _reserve(budgets: Budgets, amount: float, *, now: float = NOON, **limits: float) -> Reservation:
    return budgets.reserve(
        tenant="acme",
        job_id="job-1",
        amount_usd=amount,
        tenant_limit_usd=limits.get("tenant"),
        job_limit_usd=limits.get("job"),
        now=now,
    )


def test_50_concurrent_reservations_never_exceed_the_limit(
    connect: Callable[[], redis.Redis],
) -> None:
    # Given: 50 threads on two clients, each wanting $0.03 of a $1.00 job budget
    workers = [Budgets(connect()), Budgets(connect())]
    start = threading.Barrier(50)
    held: list[Reservation] = []
    refused: list[BudgetExceeded] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        start.wait()
        try:
            reservation = _reserve(workers[index % 2], 0.03, job=1.0, tenant=10.0)
        except BudgetExceeded as exc:
            with lock:
                refused.append(exc)
        else:
            with lock:
                held.append(reservation)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    # Then: exactly as many as fit are held, in both budgets, and the rest are refused
    assert sum(r.amount_usd for r in held) <= 1.0
    assert (len(held), len(refused)) == (33, 17)
    assert workers[0].usage(job_id="job-1", now=NOON) == Usage(spent_usd=0, reserved_usd=0.99)
    assert workers[1].usage(tenant="acme", now=NOON) == Usage(spent_usd=0, reserved_usd=0.99)


def test_refusal_reserves_nothing_and_names_the_budget(budgets: Budgets) -> None:
    _reserve(budgets, 4.99, tenant=5.0)

    with pytest.raises(BudgetExceeded) as caught:
        _reserve(budgets, 0.02, tenant=5.0, job=10.0)

    assert str(caught.value) == (
        "tenant acme daily budget $5.00: $4.99 spent or reserved, this call may cost up to $0.02"
    )
    assert budgets.usage(job_id="job-1", now=NOON).reserved_usd == pytest.approx(4.99)


def test_job_budget_refuses_even_when_the_tenant_has_room(budgets: Budgets) -> None:
    _reserve(budgets, 0.00009, job=0.0001, tenant=5.0)

    with pytest.raises(BudgetExceeded, match=r"^job job-1 budget \$0\.0001: \$0\.00009 spent"):
        _reserve(budgets, 0.000015, job=0.0001, tenant=5.0)


def test_both_budgets_are_named_when_both_refuse(budgets: Budgets) -> None:
    _reserve(budgets, 1.0, job=1.0, tenant=1.0)

    with pytest.raises(BudgetExceeded, match=r"tenant acme daily .*; job job-1 budget \$1\.00"):
        _reserve(budgets, 0.5, job=1.0, tenant=1.0)


def test_settle_replaces_the_reservation_with_the_actual_cost(budgets: Budgets) -> None:
    lower = _reserve(budgets, 0.50, job=1.0)
    higher = _reserve(budgets, 0.10, job=1.0)

    assert budgets.settle(lower, actual_usd=0.20)
    assert budgets.settle(higher, actual_usd=0.15)

    assert budgets.usage(job_id="job-1", now=NOON) == Usage(spent_usd=0.35, reserved_usd=0)
    assert budgets.spent(tenant="acme", now=NOON) == pytest.approx(0.35)
    assert budgets.remaining(job_id="job-1", limit_usd=1.0, now=NOON) == pytest.approx(0.65)
    _reserve(budgets, 0.65, job=1.0)
    with pytest.raises(BudgetExceeded):
        _reserve(budgets, 0.000001, job=1.0)


def test_refund_gives_the_reservation_back(budgets: Budgets) -> None:
    held = _reserve(budgets, 1.0, job=1.0)

    assert budgets.refund(held)
    assert not budgets.refund(held)

    assert budgets.usage(job_id="job-1", now=NOON) == Usage(spent_usd=0, reserved_usd=0)
    _reserve(budgets, 1.0, job=1.0)


def test_expired_reservations_are_reclaimed(budgets: Budgets) -> None:
    # Given: a worker reserved the whole budget for 60 s and was killed
    lost = budgets.reserve(
        tenant="acme",
        job_id="job-1",
        amount_usd=1.0,
        tenant_limit_usd=1.0,
        job_limit_usd=None,
        ttl=60,
        now=NOON,
    )
    with pytest.raises(BudgetExceeded):
        _reserve(budgets, 0.5, tenant=1.0, now=NOON + 59)

    # When: the reservation's expiry passes
    again = _reserve(budgets, 0.5, tenant=1.0, now=NOON + 60)

    # Then: its money is free again; a late settle still charges what was really spent
    assert budgets.usage(tenant="acme", now=NOON + 60) == Usage(spent_usd=0, reserved_usd=0.5)
    assert not budgets.settle(lost, actual_usd=0.3)
    assert budgets.settle(again, actual_usd=0.5)
    assert budgets.usage(job_id="job-1", now=NOON + 60) == Usage(spent_usd=0.8, reserved_usd=0)


def test_a_reservation_is_released_once(budgets: Budgets) -> None:
    # Given: a call settled at its real cost
    held = _reserve(budgets, 0.50, job=1.0)
    assert budgets.settle(held, actual_usd=0.20)

    # When: the settle is sent again (a retry after a lost reply), then a refund
    assert not budgets.settle(held, actual_usd=0.20)
    assert not budgets.refund(held)

    # Then: it was charged once, and stays charged
    assert budgets.usage(job_id="job-1", now=NOON) == Usage(spent_usd=0.20, reserved_usd=0)
    assert budgets.spent(tenant="acme", now=NOON) == pytest.approx(0.20)


def test_a_lapsed_reservation_settled_twice_is_charged_once(budgets: Budgets) -> None:
    # Given: a reservation that lapsed while its call ran
    lost = budgets.reserve(
        tenant="acme", job_id="job-1", amount_usd=1.0, tenant_limit_usd=None,
        job_limit_usd=None, ttl=60, now=NOON,
    )  # fmt: skip
    budgets.usage(job_id="job-1", now=NOON + 61)

    # When: its late settle is sent twice
    budgets.settle(lost, actual_usd=0.3)
    budgets.settle(lost, actual_usd=0.3)

    # Then: what was spent is charged once
    assert budgets.usage(job_id="job-1", now=NOON + 61) == Usage(spent_usd=0.3, reserved_usd=0)


def test_the_release_is_remembered_for_once_ttl(connect: Callable[[], redis.Redis]) -> None:
    client = connect()
    budgets = Budgets(client, prefix="test", once_ttl=120)
    held = _reserve(budgets, 0.1)

    budgets.refund(held)

    assert 0 < client.ttl(f"test:released:{held.id}") <= 120


def test_tenant_day_rolls_at_utc_midnight(budgets: Budgets) -> None:
    last_second = datetime(2025, 3, 14, 23, 59, 59, tzinfo=UTC).timestamp()
    reserve = partial(
        budgets.reserve, tenant="acme", job_id=None, tenant_limit_usd=5.0, job_limit_usd=None
    )
    held = reserve(amount_usd=5.0, now=last_second)
    with pytest.raises(BudgetExceeded):
        reserve(amount_usd=0.01, now=last_second + 0.5)

    next_day = reserve(amount_usd=5.0, now=last_second + 1)

    # A reservation is settled against the day it was made
    assert (held.day, next_day.day) == ("2025-03-14", "2025-03-15")
    budgets.settle(held, actual_usd=4.0)
    assert budgets.spent(tenant="acme", now=last_second) == 4.0
    assert budgets.spent(tenant="acme", now=last_second + 1) == 0.0


def test_affordable_is_the_tightest_budget_left(budgets: Budgets) -> None:
    affordable = partial(budgets.affordable, tenant="acme", job_id="job-1", now=NOON)
    assert affordable(tenant_limit_usd=None, job_limit_usd=None) is None

    _reserve(budgets, 0.30, tenant=2.0, job=0.5)

    assert affordable(tenant_limit_usd=2.0, job_limit_usd=0.5) == pytest.approx(0.2)
    assert affordable(tenant_limit_usd=0.1, job_limit_usd=None) == 0.0
    # What affordable reports, reserve accepts
    _reserve(budgets, 0.2, tenant=2.0, job=0.5)


def test_amounts_are_whole_micro_dollars_rounded_against_overspending(
    budgets: Budgets,
) -> None:
    # Ten reservations of 0.1 fit exactly in 1.0 despite float drift (0.1 * 10 != 1.0)
    for _ in range(10):
        _reserve(budgets, 0.1, job=1.0)
    # A fraction of a micro-dollar still takes a whole one, so tiny calls are not free
    with pytest.raises(BudgetExceeded, match=r"may cost up to \$0\.000001"):
        _reserve(budgets, 1e-9, job=1.0)


def test_keys_expire(connect: Callable[[], redis.Redis]) -> None:
    client = connect()
    budgets = Budgets(client, prefix="test", tenant_retention=86_400, job_ttl=3_600)
    held = _reserve(budgets, 0.1)

    assert 0 < client.ttl("test:job:job-1") <= 3_600
    assert 0 < client.ttl("test:job:job-1:held") <= 3_600
    # Half a day left of 2025-03-14 plus one day of retention
    assert 86_400 < client.ttl("test:tenant:acme:2025-03-14") <= 86_400 * 1.5

    # A settle that recreates an expired budget key gives it a TTL again
    client.delete("test:job:job-1")
    budgets.settle(held, actual_usd=0.1)
    assert 0 < client.ttl("test:job:job-1") <= 3_600


def test_misuse_fails_with_a_sentence(budgets: Budgets) -> None:
    with pytest.raises(ValueError, match="needs a tenant, a job_id or both"):
        budgets.reserve(
            tenant=None, job_id=None, amount_usd=1, tenant_limit_usd=None, job_limit_usd=None
        )
    with pytest.raises(ValueError, match="exactly one budget"):
        budgets.usage(tenant="acme", job_id="job-1")
    with pytest.raises(ValueError, match="must not be negative"):
        _reserve(budgets, -1.0)
