"""Breakers shared through a real Valkey server: trips, probes, backoff, operator overrides."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from routing.breaker import BreakerPolicy, Breakers, Permit

T0 = 1_000_000.0
MODEL = "openai/gpt-4o"

MakeBreakers = Callable[..., Breakers]


@pytest.fixture
def client(connect: Callable[[], redis.Redis]) -> redis.Redis:
    return connect()


@pytest.fixture
def make_breakers(client: redis.Redis) -> MakeBreakers:
    """Breakers on the test server; policy fields as keyword arguments, jitter 0 unless given."""

    def make(*, on: redis.Redis | None = None, **policy: Any) -> Breakers:
        policy.setdefault("jitter", 0.0)
        return Breakers(on or client, BreakerPolicy(**policy), prefix="test:breaker:")

    return make


def calls(b: Breakers, *, ok: int = 0, failed: int = 0, at: float = T0, **kw: Any) -> None:
    for _ in range(ok):
        b.record(MODEL, ok=True, latency_s=1.0, now=at, **kw)
    for _ in range(failed):
        b.record(MODEL, ok=False, latency_s=1.0, now=at, **kw)


def trip(b: Breakers, *, at: float = T0) -> float:
    """Open MODEL's breaker at ``at``; returns when it goes half-open."""
    calls(b, failed=b.policy.min_calls, at=at)
    until = b.state(MODEL, now=at).opened_until
    assert until is not None
    return until


def probe(b: Breakers, *, at: float) -> Permit:
    permit = b.allow(MODEL, now=at)
    assert permit.allowed
    assert permit.state == "half_open"
    assert permit.probe_token
    return permit


def test_stays_closed_below_min_calls(make_breakers: MakeBreakers) -> None:
    b = make_breakers(min_calls=10)

    calls(b, failed=9)

    assert b.state(MODEL, now=T0).state == "closed"
    assert b.allow(MODEL, now=T0).allowed


def test_opens_when_failure_rate_is_reached(make_breakers: MakeBreakers) -> None:
    b = make_breakers(min_calls=10, failure_rate=0.5, open_s=10)

    # Given 6 successes and 4 failures, the rate 0.4 stays under 0.5
    calls(b, ok=6, failed=4)
    assert b.state(MODEL, now=T0).state == "closed"

    # When two more fail, 6 of 12 calls have failed: exactly the rate
    calls(b, failed=2)

    # Then the breaker is open and refuses until the open period ends
    state = b.state(MODEL, now=T0)
    assert (state.state, state.open_count, state.opened_until) == ("open", 1, T0 + 10)
    permit = b.allow(MODEL, now=T0 + 1)
    assert (permit.allowed, permit.state, permit.retry_at) == (False, "open", T0 + 10)


def test_a_rate_exactly_at_the_threshold_opens(make_breakers: MakeBreakers) -> None:
    # 0.3 * 10 is 3.0000000000000004 in floating point; 3 failures of 10 must still trip
    b = make_breakers(min_calls=10, failure_rate=0.3)

    calls(b, ok=7, failed=3)

    assert b.state(MODEL, now=T0).state == "open"


def test_opens_on_slow_call_rate(make_breakers: MakeBreakers) -> None:
    b = make_breakers(min_calls=10, slow_call_s=5, slow_call_rate=0.8)

    # Given every call succeeds but 8 of 10 take 5 s or more
    for i in range(10):
        b.record(MODEL, ok=True, latency_s=2.0 if i < 2 else 5.0, now=T0)

    assert b.state(MODEL, now=T0).state == "open"


def test_non_retryable_errors_count_as_successes(make_breakers: MakeBreakers) -> None:
    b = make_breakers(min_calls=10)

    calls(b, failed=20, retryable=False)

    state = b.state(MODEL, now=T0)
    assert (state.state, state.calls, state.failures) == ("closed", 20, 0)


def test_calls_older_than_the_window_no_longer_count(make_breakers: MakeBreakers) -> None:
    b = make_breakers(window_s=60, min_calls=10)

    calls(b, failed=9, at=T0)
    calls(b, failed=1, at=T0 + 61)

    state = b.state(MODEL, now=T0 + 61)
    assert (state.state, state.calls) == ("closed", 1)


def test_open_refuses_until_the_open_period_ends(make_breakers: MakeBreakers) -> None:
    b = make_breakers(open_s=10)
    until = trip(b)

    assert not b.allow(MODEL, now=until - 0.001).allowed
    assert probe(b, at=until).retry_at is None


def test_results_of_calls_started_before_opening_are_ignored(make_breakers: MakeBreakers) -> None:
    b = make_breakers(open_s=10)
    until = trip(b)

    calls(b, ok=5, failed=5, at=T0 + 1)

    state = b.state(MODEL, now=T0 + 1)
    assert (state.state, state.opened_until, state.calls) == ("open", until, 0)


def test_half_open_grants_one_probe_to_racing_threads(make_breakers: MakeBreakers) -> None:
    b = make_breakers()
    until = trip(b)
    barrier = threading.Barrier(20)
    permits: list[Permit] = []

    def worker() -> None:
        barrier.wait()
        permits.append(b.allow(MODEL, now=until + 1))

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    granted = [p for p in permits if p.allowed]
    assert len(permits) == 20
    assert len(granted) == 1
    assert all(
        p.state == "half_open" and p.retry_at == until + 61 for p in permits if not p.allowed
    )


def test_half_open_grants_one_probe_across_clients(
    make_breakers: MakeBreakers, connect: Callable[[], redis.Redis]
) -> None:
    here, there = make_breakers(), make_breakers(on=connect())
    until = trip(here)

    answers = [here.allow(MODEL, now=until), there.allow(MODEL, now=until)]
    answers += [there.allow(MODEL, now=until + 1), here.allow(MODEL, now=until + 1)]

    assert [p.allowed for p in answers] == [True, False, False, False]


def test_probe_success_closes_with_an_empty_window(make_breakers: MakeBreakers) -> None:
    b = make_breakers()
    until = trip(b)
    permit = probe(b, at=until)

    state = b.record(MODEL, ok=True, latency_s=1.0, probe_token=permit.probe_token, now=until + 1)

    assert (state.state, state.calls, state.opened_until) == ("closed", 0, None)
    assert all(b.allow(MODEL, now=until + 1).allowed for _ in range(3))


def test_slow_probe_reopens(make_breakers: MakeBreakers) -> None:
    b = make_breakers(slow_call_s=5)
    until = trip(b)
    token = probe(b, at=until).probe_token

    state = b.record(MODEL, ok=True, latency_s=6.0, probe_token=token, now=until + 6)

    assert (state.state, state.open_count) == ("open", 2)


def test_failed_probes_back_off_exponentially_within_jitter_up_to_the_cap(
    make_breakers: MakeBreakers,
) -> None:
    b = make_breakers(open_s=10, backoff=2, max_open_s=30, jitter=0.2)

    # Given a trip, then probes that fail at once, three times
    start = T0
    until = trip(b, at=start)
    periods = [until - start]
    for _ in range(3):
        start = until
        token = probe(b, at=start).probe_token
        state = b.record(MODEL, ok=False, latency_s=1.0, probe_token=token, now=start)
        assert state.opened_until is not None
        until = state.opened_until
        periods.append(until - start)

    # Then each period is the backoff step, shortened by at most 20%, and never over 30 s
    for period, full in zip(periods, [10, 20, 30, 30], strict=True):
        assert full * 0.8 - 1e-6 <= period <= full + 1e-6
    assert b.state(MODEL, now=until).open_count == 4


def test_backoff_streak_continues_when_reopening_soon_after_closing(
    make_breakers: MakeBreakers,
) -> None:
    b = make_breakers(window_s=60, open_s=10, backoff=2)
    until = trip(b)
    token = probe(b, at=until).probe_token
    b.record(MODEL, ok=True, latency_s=1.0, probe_token=token, now=until)

    # A flapping deployment trips again within a window of closing: longer period
    again = trip(b, at=until + 5)
    assert again - (until + 5) == 20

    # One that stays closed for a whole window starts a fresh streak
    b.force_close(MODEL)
    until = trip(b, at=T0 + 1000)
    token = probe(b, at=until).probe_token
    b.record(MODEL, ok=True, latency_s=1.0, probe_token=token, now=until)
    assert b.state(MODEL, now=until + 60).open_count == 0
    assert trip(b, at=until + 60) - (until + 60) == 10


def test_expired_probe_lease_lets_another_probe_through(make_breakers: MakeBreakers) -> None:
    b = make_breakers(probe_lease_s=60)
    until = trip(b)
    stale = probe(b, at=until).probe_token

    # Given the first probe's worker died and its lease expired, a second probe gets through
    assert not b.allow(MODEL, now=until + 59.9).allowed
    fresh = probe(b, at=until + 60).probe_token
    assert fresh != stale

    # When the stale probe reports late, it decides nothing; the current probe does
    late = b.record(MODEL, ok=False, latency_s=1.0, probe_token=stale, now=until + 61)
    assert late.state == "half_open"
    done = b.record(MODEL, ok=True, latency_s=1.0, probe_token=fresh, now=until + 62)
    assert done.state == "closed"


def test_force_open_for_seconds_then_probes(make_breakers: MakeBreakers) -> None:
    b = make_breakers()
    calls(b, ok=3)

    state = b.force_open(MODEL, seconds=120, now=T0)

    assert (state.state, state.forced, state.opened_until, state.calls) == (
        "open",
        True,
        T0 + 120,
        0,
    )
    assert not b.allow(MODEL, now=T0 + 119).allowed
    token = probe(b, at=T0 + 120).probe_token
    closed = b.record(MODEL, ok=True, latency_s=1.0, probe_token=token, now=T0 + 121)
    assert (closed.state, closed.forced) == ("closed", False)


def test_force_open_until_closed(make_breakers: MakeBreakers, client: redis.Redis) -> None:
    b = make_breakers()

    b.force_open(MODEL, now=T0)

    permit = b.allow(MODEL, now=T0 + 10**6)
    assert (permit.allowed, permit.state, permit.retry_at) == (False, "open", math.inf)
    assert b.state(MODEL, now=T0).opened_until == math.inf
    assert client.ttl(b.key(MODEL)) == -1  # an operator's hold never expires on its own

    b.force_close(MODEL)

    assert b.state(MODEL, now=T0).state == "closed"
    assert b.allow(MODEL, now=T0).allowed


def test_keys_expire(make_breakers: MakeBreakers, client: redis.Redis) -> None:
    b = make_breakers(window_s=60, open_s=10, max_open_s=300, probe_lease_s=60)
    keep_ms = 2 * 300 * 1000

    b.record(MODEL, ok=True, latency_s=1.0)
    assert 0 < client.pttl(b.key(MODEL)) <= keep_ms

    # An open key lives for its open period on top
    now = time.time()
    trip(b, at=now)
    assert keep_ms < client.pttl(b.key(MODEL)) <= keep_ms + 10_000


def test_window_memory_is_bounded(make_breakers: MakeBreakers, client: redis.Redis) -> None:
    b = make_breakers(window_s=60, min_calls=1000)

    for second in range(0, 600, 2):
        b.record(MODEL, ok=True, latency_s=1.0, now=T0 + second)

    assert client.hlen(b.key(MODEL)) <= 4 * 10 + 1
    assert b.state(MODEL, now=T0 + 598).calls <= 30


def test_allowed_models_excludes_open_ones_and_takes_no_probe(
    make_breakers: MakeBreakers,
) -> None:
    b = make_breakers(open_s=10)
    for model in ("down", "recovering"):
        for _ in range(10):
            b.record(model, ok=False, latency_s=1.0, now=T0)
    models = ["up", "down", "recovering", "never-seen"]
    later = T0 + 5
    b.force_open("down", seconds=100, now=later)

    # Given "recovering" is half-open with its probe lease free, it stays a candidate
    assert b.allowed_models(models, now=T0 + 10) == {"up", "recovering", "never-seen"}
    assert b.allowed_models(models, now=T0 + 10) == {"up", "recovering", "never-seen"}

    # When a worker takes the probe, the others no longer see it as a candidate
    assert b.allow("recovering", now=T0 + 10).allowed
    assert b.allowed_models(models, now=T0 + 11) == {"up", "never-seen"}
    assert b.allowed_models([], now=T0) == set()


def test_states_come_back_in_order(make_breakers: MakeBreakers) -> None:
    b = make_breakers()
    b.force_open("b", seconds=30, now=T0)

    states = b.states(["a", "b", "c"], now=T0)

    assert [(s.model, s.state) for s in states] == [("a", "closed"), ("b", "open"), ("c", "closed")]


def test_redis_clock_is_used_when_no_time_is_given(make_breakers: MakeBreakers) -> None:
    b = make_breakers(open_s=10)

    for _ in range(10):
        b.record(MODEL, ok=False, latency_s=1.0)
    permit = b.allow(MODEL)

    assert not permit.allowed
    assert permit.retry_at is not None
    assert abs(permit.retry_at - (time.time() + 10)) < 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("failure_rate", 1.5), ("min_calls", 0), ("jitter", 1.0), ("max_open_s", 5.0)],
)
def test_policy_rejects_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        BreakerPolicy(**{field: value})
