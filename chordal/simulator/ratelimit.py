"""Provider rate limits: requests and tokens per sliding window, per model, with OpenAI's headers.

A model whose profile sets ``rpm`` and/or ``tpm`` admits a request only if, counting it, the
requests (tokens) admitted in the last ``rate_window_s`` seconds stay within the limit. Refused
requests do not use up the limit, so ``Retry-After`` is exact: the seconds, rounded up, until
enough admitted requests leave the window.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from chordal.simulator.profiles import ModelProfile

LimitKind = Literal["requests", "tokens"]


def go_duration(seconds: float) -> str:
    """Format a duration as OpenAI's rate-limit headers do (Go style): ``20ms``, ``1.5s``, ``6m0s``.

    Rounded up to the millisecond so a client waiting that long is never early.
    """
    millis = max(0, math.ceil(seconds * 1000 - 1e-6))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    secs = f"{whole}.{fraction:03d}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused and when to retry."""

    kind: LimitKind
    retry_after_s: int
    message: str


@dataclass(frozen=True)
class Verdict:
    """The limiter's answer to one request: the headers to send and the refusal, if any."""

    headers: dict[str, str]
    refusal: Refusal | None = None


@dataclass
class _Window:
    """Requests admitted within the current window, oldest first, with their token charges."""

    times: deque[float] = field(default_factory=deque)
    charges: deque[int] = field(default_factory=deque)
    tokens: int = 0

    def expire(self, horizon: float) -> None:
        # A request admitted at ``t`` counts while ``now - window < t``.
        while self.times and self.times[0] <= horizon:
            self.times.popleft()
            self.tokens -= self.charges.popleft()

    def admit(self, now: float, tokens: int) -> None:
        self.times.append(now)
        self.charges.append(tokens)
        self.tokens += tokens


class RateLimits:
    """Sliding-window rpm/tpm accounting for every model, as a provider enforces it.

    Only admitted requests are kept, and only while inside the window, so memory per model is
    bounded by the limit itself (``rpm`` entries, or ``tpm`` divided by the smallest charge).
    """

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    def reset(self) -> None:
        """Forget all usage: every limit is fully available again."""
        self._windows.clear()

    def admit(self, model: str, profile: ModelProfile, *, tokens: int, now: float) -> Verdict:
        """Admit or refuse a request charged ``tokens`` arriving at monotonic time ``now``."""
        if profile.rpm is None and profile.tpm is None:
            return Verdict(headers={})
        window = self._windows.setdefault(model, _Window())
        span = profile.rate_window_s
        window.expire(now - span)
        refusals = [
            r
            for r in (
                _requests_refusal(model, profile, window, now=now),
                _tokens_refusal(model, profile, window, tokens=tokens, now=now),
            )
            if r is not None
        ]
        refusal = max(refusals, key=lambda r: r.retry_after_s, default=None)
        if refusal is None:
            window.admit(now, tokens)
        return Verdict(headers=_headers(profile, window, now=now), refusal=refusal)


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))


def _requests_refusal(
    model: str, profile: ModelProfile, window: _Window, *, now: float
) -> Refusal | None:
    limit, used = profile.rpm, len(window.times)
    if limit is None or used < limit:
        return None
    # The request fits once all but ``limit - 1`` of the admitted ones have left the window.
    freed_at = window.times[used - limit] + profile.rate_window_s
    retry = _retry_after(freed_at - now)
    message = (
        f"Rate limit reached for {model} (simulated) on requests per window of "
        f"{profile.rate_window_s:g}s: Limit {limit}, Used {used}, Requested 1. "
        f"Please try again in {go_duration(freed_at - now)}."
    )
    return Refusal(kind="requests", retry_after_s=retry, message=message)


def _tokens_refusal(
    model: str, profile: ModelProfile, window: _Window, *, tokens: int, now: float
) -> Refusal | None:
    limit, used = profile.tpm, window.tokens
    if limit is None or used + tokens <= limit:
        return None
    if tokens > limit:
        message = (
            f"Request too large for {model} (simulated) on tokens per window of "
            f"{profile.rate_window_s:g}s: Limit {limit}, Requested {tokens}. "
            "The input or output tokens must be reduced in order to run successfully."
        )
        return Refusal(
            kind="tokens", retry_after_s=_retry_after(profile.rate_window_s), message=message
        )
    freed, freed_at = 0, now
    for admitted_at, charge in zip(window.times, window.charges, strict=True):
        freed += charge
        if used - freed + tokens <= limit:
            freed_at = admitted_at + profile.rate_window_s
            break
    message = (
        f"Rate limit reached for {model} (simulated) on tokens per window of "
        f"{profile.rate_window_s:g}s: Limit {limit}, Used {used}, Requested {tokens}. "
        f"Please try again in {go_duration(freed_at - now)}."
    )
    return Refusal(kind="tokens", retry_after_s=_retry_after(freed_at - now), message=message)


def _headers(profile: ModelProfile, window: _Window, *, now: float) -> dict[str, str]:
    # "reset" is the time until the limit is fully available again: the newest admitted
    # request leaves the window.
    reset = go_duration(window.times[-1] + profile.rate_window_s - now) if window.times else "0s"
    headers: dict[str, str] = {}
    if profile.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(profile.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, profile.rpm - len(window.times)))
        headers["x-ratelimit-reset-requests"] = reset
    if profile.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(profile.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, profile.tpm - window.tokens))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers
