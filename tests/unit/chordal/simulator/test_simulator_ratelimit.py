"""Sliding-window rpm/tpm enforcement and OpenAI's rate-limit headers, on a fake clock."""

from __future__ import annotations

import pytest

from chordal.simulator.profiles import ModelProfile
from chordal.simulator.ratelimit import RateLimits, go_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.0001, "1ms"),
        (0.02, "20ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (8.64, "8.64s"),
        (59.9991, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3725, "1h2m5s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_unlimited_models_get_no_headers_and_are_never_refused() -> None:
    limits = RateLimits()

    verdicts = [limits.admit("m", ModelProfile(), tokens=10, now=0.0) for _ in range(1000)]

    assert all(v.refusal is None and v.headers == {} for v in verdicts)


def test_rpm_slides_and_retry_after_waits_for_the_oldest_request() -> None:
    limits, profile = RateLimits(), ModelProfile(rpm=3, rate_window_s=2.0)

    admitted = [limits.admit("m", profile, tokens=1, now=t) for t in (0.0, 0.5, 1.0)]
    refused = limits.admit("m", profile, tokens=1, now=1.2)
    at_boundary = limits.admit("m", profile, tokens=1, now=2.0)

    assert [v.headers["x-ratelimit-remaining-requests"] for v in admitted] == ["2", "1", "0"]
    assert [v.headers["x-ratelimit-reset-requests"] for v in admitted] == ["2s", "2s", "2s"]
    assert refused.refusal is not None
    assert (refused.refusal.kind, refused.refusal.retry_after_s) == ("requests", 1)
    assert "try again in 800ms" in refused.refusal.message
    assert refused.headers["x-ratelimit-reset-requests"] == "1.8s"
    # The request admitted at 0.0 leaves the window (t - 2.0, t] exactly at 2.0.
    assert at_boundary.refusal is None
    assert at_boundary.headers["x-ratelimit-remaining-requests"] == "0"


def test_refused_requests_do_not_use_up_the_limit() -> None:
    limits, profile = RateLimits(), ModelProfile(rpm=1, rate_window_s=10.0)
    limits.admit("m", profile, tokens=1, now=0.0)

    for step in range(100):
        assert limits.admit("m", profile, tokens=1, now=step * 0.09).refusal is not None

    assert limits.admit("m", profile, tokens=1, now=10.0).refusal is None


def test_lowered_rpm_waits_until_enough_requests_leave() -> None:
    limits = RateLimits()
    for t in range(5):
        limits.admit("m", ModelProfile(rpm=10, rate_window_s=10.0), tokens=1, now=float(t))

    verdict = limits.admit("m", ModelProfile(rpm=2, rate_window_s=10.0), tokens=1, now=5.0)

    # Requests at 0, 1, 2 and 3 must leave before a third fits: the one at 3.0 leaves at 13.0.
    assert verdict.refusal is not None
    assert verdict.refusal.retry_after_s == 8


def test_tpm_waits_until_enough_tokens_leave() -> None:
    limits, profile = RateLimits(), ModelProfile(tpm=100, rate_window_s=60.0)
    first = limits.admit("m", profile, tokens=30, now=0.0)
    limits.admit("m", profile, tokens=30, now=10.0)
    limits.admit("m", profile, tokens=30, now=20.0)

    refused = limits.admit("m", profile, tokens=50, now=30.0)

    assert first.headers["x-ratelimit-remaining-tokens"] == "70"
    assert "x-ratelimit-remaining-requests" not in first.headers
    assert refused.refusal is not None
    # 90 used + 50 asked: the two oldest (60 tokens) must leave; the second leaves at 70.0.
    assert (refused.refusal.kind, refused.refusal.retry_after_s) == ("tokens", 40)
    assert refused.headers["x-ratelimit-remaining-tokens"] == "10"


def test_a_request_larger_than_the_tpm_is_too_large() -> None:
    verdict = RateLimits().admit("m", ModelProfile(tpm=100, rate_window_s=5.0), tokens=101, now=0)

    assert verdict.refusal is not None
    assert "Request too large" in verdict.refusal.message
    assert verdict.refusal.retry_after_s == 5


def test_retry_after_is_the_longer_wait_when_both_limits_are_hit() -> None:
    limits, profile = RateLimits(), ModelProfile(rpm=2, tpm=100, rate_window_s=60.0)
    limits.admit("m", profile, tokens=5, now=0.0)
    limits.admit("m", profile, tokens=90, now=30.0)

    verdict = limits.admit("m", profile, tokens=20, now=31.0)

    # A request slot frees at 60.0, but 20 more tokens only fit once the 90 leave at 90.0.
    assert verdict.refusal is not None
    assert (verdict.refusal.kind, verdict.refusal.retry_after_s) == ("tokens", 59)


def test_models_are_limited_separately_and_reset_forgets_usage() -> None:
    limits, profile = RateLimits(), ModelProfile(rpm=1)
    limits.admit("a", profile, tokens=1, now=0.0)

    assert limits.admit("b", profile, tokens=1, now=0.0).refusal is None
    assert limits.admit("a", profile, tokens=1, now=0.0).refusal is not None
    limits.reset()
    assert limits.admit("a", profile, tokens=1, now=0.0).refusal is None
