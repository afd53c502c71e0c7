"""The cost ledger against a real Valkey server: counting, days, concurrency, expiry, odd names."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import redis

from routing.ledger import Ledger, LedgerRow

TODAY = datetime.now(UTC).date()


def _noon(day: date) -> float:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()


CALL: dict[str, Any] = {
    "tenant": "acme",
    "model": "gpt-5",
    "agent": "summarizer",
    "tier": "premium",
    "tokens_in": 1000,
    "tokens_out": 200,
    "cost_usd": 0.003250,
    "latency_s": 1.5,
    "ok": True,
    "at": _noon(TODAY),
}


def _call(ledger: Ledger, **overrides: Any) -> None:
    ledger.record(**{**CALL, **overrides})


@pytest.fixture
def ledger(connect: Callable[[], redis.Redis]) -> Ledger:
    return Ledger(connect())


def test_a_recorded_call_reads_back_as_one_row(ledger: Ledger) -> None:
    # When one call succeeds and one fails on the same combination
    _call(ledger)
    _call(ledger, ok=False, tokens_out=0, cost_usd=0.001, latency_s=0.25)

    # Then the day has one row summing both
    (row,) = ledger.rows(since_day=TODAY, until_day=TODAY)
    assert row == LedgerRow(
        day=TODAY, tenant="acme", model="gpt-5", agent="summarizer", tier="premium",
        requests=2, errors=1, tokens_in=2000, tokens_out=200, cost_usd=0.00425,
        latency_s_sum=1.75,
    )  # fmt: skip
    assert (row.successes, row.mean_latency_s) == (1, 0.875)


def test_calls_are_counted_in_their_utc_day_and_read_across_days(ledger: Ledger) -> None:
    # Given calls on three days
    three_ago, yesterday = TODAY - timedelta(days=3), TODAY - timedelta(days=1)
    _call(ledger, at=_noon(three_ago))
    _call(ledger, at=_noon(yesterday))
    _call(ledger, at=_noon(yesterday) + 3600)
    # A second before midnight UTC still belongs to the day that is ending
    _call(ledger, at=_noon(TODAY) - 12 * 3600 - 1)
    _call(ledger, tenant="globex", model="gpt-5-mini", tier="balanced")

    # When the ledger is read from three days ago
    rows = ledger.rows(since_day=three_ago, until_day=TODAY)

    # Then each day has its own rows, sorted by day then names
    found = [(row.day, row.tenant, row.model, row.requests) for row in rows]
    assert found == [
        (three_ago, "acme", "gpt-5", 1),
        (yesterday, "acme", "gpt-5", 3),
        (TODAY, "globex", "gpt-5-mini", 1),
    ]
    assert [row.day for row in ledger.rows(since_day=yesterday, until_day=yesterday)] == [yesterday]
    assert (
        ledger.rows(since_day=TODAY - timedelta(days=2), until_day=TODAY - timedelta(days=2)) == []
    )


def test_concurrent_calls_sum_exactly(connect: Callable[[], redis.Redis]) -> None:
    # Given 20 threads on two clients, each recording 25 calls of $0.000123
    ledgers = [Ledger(connect()), Ledger(connect())]
    start = threading.Barrier(20)

    def run(index: int) -> None:
        start.wait()
        for n in range(25):
            _call(ledgers[index % 2], cost_usd=0.000123, latency_s=0.1, ok=n % 5 != 0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    # Then nothing is lost and no float drifts
    (row,) = ledgers[0].rows(since_day=TODAY, until_day=TODAY)
    assert (row.requests, row.errors) == (500, 100)
    assert (row.tokens_in, row.tokens_out) == (500_000, 100_000)
    assert row.cost_usd == 0.0615
    assert row.latency_s_sum == 50.0


def test_a_day_expires_retention_days_after_it_ends(connect: Callable[[], redis.Redis]) -> None:
    # Given a ledger keeping 3 days
    client = connect()
    ledger = Ledger(client, retention_days=3)

    # When yesterday and a day long past retention each get a call
    yesterday = TODAY - timedelta(days=1)
    _call(ledger, at=_noon(yesterday))
    _call(ledger, at=_noon(TODAY - timedelta(days=10)))

    # Then yesterday's hash lives until 3 days after it ended, and the old day is gone at once
    kept_until = datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC) + timedelta(days=3)
    assert abs(client.ttl(ledger.key(yesterday)) - (kept_until.timestamp() - time.time())) < 5
    assert not client.exists(ledger.key(TODAY - timedelta(days=10)))
    assert (
        ledger.rows(since_day=TODAY - timedelta(days=10), until_day=TODAY - timedelta(days=4)) == []
    )


def test_names_with_separators_and_quotes_stay_apart(ledger: Ledger) -> None:
    # Given names that would collide if joined with ':' or '|'
    _call(ledger, tenant="a|b", model="c")
    _call(ledger, tenant="a", model="b|c")
    _call(ledger, tenant="t:1", model='say "hi"', agent="ünïcode agent", tier="x:y|z")

    rows = ledger.rows(since_day=TODAY, until_day=TODAY)

    assert sorted((row.tenant, row.model, row.agent, row.tier) for row in rows) == [
        ("a", "b|c", "summarizer", "premium"),
        ("a|b", "c", "summarizer", "premium"),
        ("t:1", 'say "hi"', "ünïcode agent", "x:y|z"),
    ]


def test_a_cost_below_a_micro_dollar_rounds_up(ledger: Ledger) -> None:
    _call(ledger, cost_usd=0.0000001)
    _call(ledger, cost_usd=0.0, at=None)  # now: today

    (row,) = ledger.rows(since_day=TODAY, until_day=TODAY)

    assert row.cost_usd == 0.000001


@pytest.mark.parametrize(
    "bad",
    [{"tokens_in": -1}, {"tokens_out": -5}, {"cost_usd": -0.1}, {"cost_usd": float("nan")},
     {"latency_s": float("inf")}],
)  # fmt: skip
def test_impossible_calls_are_refused(ledger: Ledger, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        _call(ledger, **bad)


def test_bad_construction_and_ranges_fail_with_a_sentence(
    connect: Callable[[], redis.Redis], ledger: Ledger
) -> None:
    with pytest.raises(ValueError, match="retention_days must be at least 1"):
        Ledger(connect(), retention_days=0)
    with pytest.raises(ValueError, match="is after until_day"):
        ledger.rows(since_day=TODAY, until_day=TODAY - timedelta(days=1))


def test_an_uncertain_call_is_counted_as_an_error_and_as_uncertain(ledger: Ledger) -> None:
    # When: one call answers and one times out, charged its worst case
    _call(ledger)
    _call(ledger, ok=False, uncertain=True, tokens_in=0, tokens_out=0, cost_usd=0.01)

    # Then: the row tells the uncertain call and its charge apart, inside the totals
    (row,) = ledger.rows(since_day=TODAY, until_day=TODAY)
    assert (row.requests, row.errors, row.uncertain) == (2, 1, 1)
    assert (row.cost_usd, row.uncertain_cost_usd) == (0.01325, 0.01)


def test_a_call_id_is_counted_once(ledger: Ledger) -> None:
    # Given: a call recorded under its id
    assert ledger.record(**CALL, call_id="call-1")

    # When: the same record is sent again (a retry after a lost reply), and another call
    repeated = ledger.record(**CALL, call_id="call-1")
    assert ledger.record(**CALL, call_id="call-2")

    # Then: the repeat counted nothing
    assert not repeated
    (row,) = ledger.rows(since_day=TODAY, until_day=TODAY)
    assert (row.requests, row.tokens_in, row.cost_usd) == (2, 2000, 0.0065)


def test_the_call_id_is_remembered_for_once_ttl_s(connect: Callable[[], redis.Redis]) -> None:
    client = connect()
    ledger = Ledger(client, once_ttl_s=120)

    ledger.record(**CALL, call_id="call-1")

    assert 0 < client.ttl("chordal:ledger:once:call-1") <= 120


def test_a_day_written_before_uncertain_existed_reads_as_none_uncertain(
    connect: Callable[[], redis.Redis],
) -> None:
    # Given: a day as the ledger wrote it before: six counters per combination, zeros included
    client = connect()
    ledger = Ledger(client)
    old = ("requests", "errors", "tokens_in", "tokens_out", "cost_micros", "latency_ms")
    for counter, amount in zip(old, (3, 0, 300, 30, 4500, 600), strict=True):
        field = f'["acme","gpt-5","summarizer","premium","{counter}"]'
        client.hincrby(ledger.key(TODAY), field, amount)

    # When: a call of today is added, and the day read
    _call(ledger)
    (row,) = ledger.rows(since_day=TODAY, until_day=TODAY)

    # Then: both are summed, with no uncertain calls; the new call wrote no zero counters
    assert (row.requests, row.errors, row.tokens_in, row.uncertain) == (4, 0, 1300, 0)
    assert row.uncertain_cost_usd == 0
    assert client.hlen(ledger.key(TODAY)) == len(old)


def test_an_uncertain_call_cannot_be_ok(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="must not be recorded as ok"):
        _call(ledger, uncertain=True)
