"""Fleet-wide rate limits per deployment, against a real Valkey server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import pytest
import redis

from routing.limits import Grant, RateLimits, parse_duration
from workers.errors import RateLimited

T0 = 1_700_000_000.0
MODEL = "gpt-4o"


@pytest.fixture
def limits(connect: Callable[[], redis.Redis]) -> RateLimits:
    return RateLimits(connect())


def _acquire_one(limits: RateLimits, *, now: float) -> Grant:
    return limits.acquire(MODEL, rpm=10, tpm=None, tokens=1, now=now)


def _race(
    workers: list[RateLimits], *, threads: int, call: Callable[[RateLimits], Grant]
) -> list[Grant]:
    start = threading.Barrier(threads)
    grants: list[Grant] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        start.wait()
        grant = call(workers[index % len(workers)])
        with lock:
            grants.append(grant)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(10)
    assert len(grants) == threads
    return grants


@pytest.mark.parametrize("now", [T0, None], ids=["injected-clock", "server-clock"])
def test_rpm_is_exact_under_30_racing_threads_on_two_clients(
    connect: Callable[[], redis.Redis], now: float | None
) -> None:
    # Given: two worker processes' worth of clients sharing one deployment limit
    workers = [RateLimits(connect()), RateLimits(connect())]

    # When: 30 threads ask at once
    grants = _race(
        workers,
        threads=30,
        call=lambda limits: limits.acquire(MODEL, rpm=10, tpm=None, tokens=5, now=now),
    )

    # Then: exactly rpm are granted; the rest are told to wait for the rpm limit
    granted = [g for g in grants if g.granted]
    refused = [g for g in grants if not g.granted]
    assert len(granted) == 10
    assert {g.limit for g in refused} == {"rpm"}
    assert all(0 < g.retry_after <= 60 for g in refused)


def test_no_window_ever_holds_more_than_rpm_grants(connect: Callable[[], redis.Redis]) -> None:
    # Given: 30 threads on two clients asking every 5 s for three minutes
    workers = [RateLimits(connect()), RateLimits(connect())]
    per_step: list[int] = []
    for step in range(36):
        call = partial(_acquire_one, now=T0 + step * 5)
        per_step.append(sum(g.granted for g in _race(workers, threads=30, call=call)))

    # Then: every 60 s window (12 steps) holds exactly rpm grants, never more
    windows = [sum(per_step[i : i + 12]) for i in range(len(per_step) - 11)]
    assert max(windows) == 10
    assert per_step[0] == per_step[12] == per_step[24] == 10


def test_tpm_refusal_takes_no_request_and_rpm_refusal_takes_no_tokens(limits: RateLimits) -> None:
    # Given: 600 of 1000 tokens taken
    assert limits.acquire(MODEL, rpm=2, tpm=1000, tokens=600, now=T0).granted

    # When: a call that would overrun the tokens
    too_big = limits.acquire(MODEL, rpm=2, tpm=1000, tokens=600, now=T0 + 10)

    # Then: refused by tpm until the first grant ages out, and no request was taken
    assert (too_big.granted, too_big.limit) == (False, "tpm")
    assert too_big.retry_after == pytest.approx(50)
    assert limits.headroom(MODEL, rpm=2, tpm=1000, now=T0 + 10)["requests"] == 1

    # And: a call refused by rpm takes no tokens
    assert limits.acquire(MODEL, rpm=2, tpm=1000, tokens=100, now=T0 + 10).granted
    by_rpm = limits.acquire(MODEL, rpm=2, tpm=1000, tokens=100, now=T0 + 20)
    assert (by_rpm.granted, by_rpm.limit) == (False, "rpm")
    headroom = limits.headroom(MODEL, rpm=2, tpm=1000, now=T0 + 20)
    assert headroom == {"requests": 0, "tokens": 300, "blocked_for_s": 0.0}


def test_refusal_names_the_limit_with_the_longest_wait(limits: RateLimits) -> None:
    # Given: both request slots taken, 10 tokens at T0 and 980 at T0 + 10
    assert limits.acquire(MODEL, rpm=2, tpm=1000, tokens=10, now=T0).granted
    assert limits.acquire(MODEL, rpm=2, tpm=1000, tokens=980, now=T0 + 10).granted

    # When: both limits refuse a call at T0 + 20
    grant = limits.acquire(MODEL, rpm=2, tpm=1000, tokens=100, now=T0 + 20)

    # Then: rpm frees at T0 + 60 but tokens only once both grants age out, at T0 + 70
    assert grant.limit == "tpm"
    assert grant.retry_after == pytest.approx(50)


def test_reconcile_refunds_an_over_estimate(limits: RateLimits) -> None:
    grant = limits.acquire(MODEL, rpm=None, tpm=1000, tokens=800, now=T0)

    assert limits.reconcile(grant, actual_tokens=100)

    assert limits.headroom(MODEL, rpm=None, tpm=1000, now=T0)["tokens"] == 900
    assert limits.acquire(MODEL, rpm=None, tpm=1000, tokens=900, now=T0 + 1).granted


def test_reconcile_charges_an_under_estimate(limits: RateLimits) -> None:
    grant = limits.acquire(MODEL, rpm=None, tpm=1000, tokens=100, now=T0)

    assert limits.reconcile(grant, actual_tokens=900)
    assert limits.reconcile(grant, actual_tokens=900)  # idempotent

    assert limits.headroom(MODEL, rpm=None, tpm=1000, now=T0)["tokens"] == 100
    refused = limits.acquire(MODEL, rpm=None, tpm=1000, tokens=200, now=T0 + 1)
    assert (refused.granted, refused.limit) == (False, "tpm")


def test_reconcile_after_the_grant_aged_out_changes_nothing(limits: RateLimits) -> None:
    grant = limits.acquire(MODEL, rpm=None, tpm=1000, tokens=100, now=T0)
    limits.headroom(MODEL, rpm=None, tpm=1000, now=T0 + 61)

    assert not limits.reconcile(grant, actual_tokens=900)
    assert limits.headroom(MODEL, rpm=None, tpm=1000, now=T0 + 61)["tokens"] == 1000


def test_release_gives_back_the_request_and_the_tokens(limits: RateLimits) -> None:
    grant = limits.acquire(MODEL, rpm=1, tpm=1000, tokens=1000, now=T0)

    assert limits.release(grant)
    assert not limits.release(grant)

    assert limits.headroom(MODEL, rpm=1, tpm=1000, now=T0) == {
        "requests": 1,
        "tokens": 1000,
        "blocked_for_s": 0.0,
    }
    assert limits.acquire(MODEL, rpm=1, tpm=1000, tokens=1000, now=T0).granted


def test_capacity_returns_as_grants_age_out_of_the_window(limits: RateLimits) -> None:
    def ask(at: float) -> Grant:
        return limits.acquire(MODEL, rpm=2, tpm=None, tokens=1, now=T0 + at)

    assert ask(0).granted
    assert ask(30).granted
    assert ask(40).retry_after == pytest.approx(20)
    assert not ask(59.9).granted
    assert ask(60).granted
    late = ask(61)
    assert not late.granted
    assert late.retry_after == pytest.approx(29)


def test_retry_after_blocks_the_deployment_fleet_wide(
    connect: Callable[[], redis.Redis],
) -> None:
    # Given: a 429 with Retry-After: 30 seen by one worker
    one, other = RateLimits(connect()), RateLimits(connect())
    assert one.note_retry_after(MODEL, 30, now=T0) == pytest.approx(30)

    # Then: every worker is refused until then, other deployments are not
    blocked = other.acquire(MODEL, rpm=None, tpm=None, tokens=1, now=T0 + 10)
    assert (blocked.granted, blocked.limit) == (False, "blocked")
    assert blocked.retry_after == pytest.approx(20)
    assert other.acquire("claude", rpm=None, tpm=None, tokens=1, now=T0 + 10).granted
    assert other.headroom(MODEL, rpm=5, tpm=None, now=T0 + 10)["blocked_for_s"] == 20
    assert other.acquire(MODEL, rpm=None, tpm=None, tokens=1, now=T0 + 30.5).granted

    # And: a shorter Retry-After does not shorten a block
    one.note_retry_after(MODEL, 60, now=T0 + 100)
    assert one.note_retry_after(MODEL, 5, now=T0 + 100) == pytest.approx(60)


def test_refused_grant_raises_rate_limited_with_retry_after(limits: RateLimits) -> None:
    limits.note_retry_after(MODEL, 12, now=T0)
    grant = limits.acquire(MODEL, rpm=None, tpm=None, tokens=1, now=T0 + 2)

    with pytest.raises(
        RateLimited,
        match=r"gpt-4o is blocked fleet-wide .*; retry in 10\.000s",
    ) as caught:
        grant.raise_if_refused()
    assert caught.value.retry_after == pytest.approx(10)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("7.66s", 7.66),
        ("150us", 0.00015),
        ("0.5", 0.5),
        ("2", 2.0),
        (" 3s ", 3.0),
        ("", None),
        ("soon", None),
        ("5x", None),
        ("1s later", None),
        ("-1", None),
        ("inf", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (None if seconds is None else pytest.approx(seconds))


def test_headers_at_zero_remaining_block_until_the_reset(limits: RateLimits) -> None:
    headers = {
        "X-RateLimit-Remaining-Requests": "0",
        "X-RateLimit-Reset-Requests": "6m0s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "20ms",
    }

    assert limits.note_headers(MODEL, headers, now=T0) == pytest.approx(360)

    grant = limits.acquire(MODEL, rpm=None, tpm=None, tokens=1, now=T0 + 60)
    assert grant.limit == "blocked"
    assert grant.retry_after == pytest.approx(300)


def test_headers_with_capacity_left_block_nothing(limits: RateLimits) -> None:
    headers = {
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-remaining-tokens": "junk",
    }

    assert limits.note_headers(MODEL, headers, now=T0) == 0.0
    assert limits.acquire(MODEL, rpm=None, tpm=None, tokens=1, now=T0).granted


def test_zero_remaining_without_a_reset_blocks_for_a_window(limits: RateLimits) -> None:
    assert limits.note_headers(MODEL, {"x-ratelimit-remaining-tokens": "0"}, now=T0) == 60.0


def test_keys_expire(connect: Callable[[], redis.Redis]) -> None:
    client = connect()
    limits = RateLimits(client, prefix="test")
    limits.acquire(MODEL, rpm=5, tpm=100, tokens=10, now=T0)
    limits.note_retry_after(MODEL, 3, now=T0)

    assert 0 < client.pttl(f"test:{MODEL}:log") <= 60_000
    assert 0 < client.pttl(f"test:{MODEL}:tokens") <= 60_000
    assert 0 < client.pttl(f"test:{MODEL}:block") <= 3_000


def test_a_call_larger_than_the_tpm_limit_is_a_caller_error(limits: RateLimits) -> None:
    with pytest.raises(ValueError, match="can never fit its tpm limit of 100"):
        limits.acquire(MODEL, rpm=None, tpm=100, tokens=101)
    with pytest.raises(ValueError, match="rpm must be at least 1"):
        limits.acquire(MODEL, rpm=0, tpm=None, tokens=1)


def test_unlimited_deployment_reports_no_headroom_limits(limits: RateLimits) -> None:
    assert limits.acquire(MODEL, rpm=None, tpm=None, tokens=10).granted

    assert limits.headroom(MODEL, rpm=None, tpm=None) == {
        "requests": None,
        "tokens": None,
        "blocked_for_s": 0.0,
    }
