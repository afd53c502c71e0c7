"""Fleet-wide request and token rate limits per model deployment, shared through Redis.

LiteLLM checks ``rpm``/``tpm`` per process (upstream #27736): forty worker processes each allowed
a deployment's full rate send forty times that rate. Here every worker draws from one ledger per
deployment in Redis, changed only by Lua scripts, so checking and reserving are one atomic step.

The ledger is a sliding-window log rather than a token bucket. Each grant is a member of a sorted
set scored by its time, with its token estimate in a hash beside a running sum. A call is granted
when fewer than ``rpm`` grants and at most ``tpm - tokens`` tokens lie in the last ``window``. A
token bucket refilled at ``rpm / 60`` per second lets a full bucket *plus* a window of refill
through in one window -- up to twice the limit within the provider's minute, which is exactly the
429 we are avoiding. The log never grants more than the limit in any window, and it lets
:meth:`RateLimits.reconcile` correct one grant's tokens exactly. Its cost is one member per request
in the window (at most ``rpm``) and purging aged members, amortised O(1) per call.

The provider's word overrides our count: a 429's ``Retry-After``, or an ``x-ratelimit-remaining-*``
header at 0, blocks the deployment for the whole fleet until the reset.

Time: the scripts read the Redis server's clock (``TIME``), so pods with skewed clocks agree; tests
pass ``now`` (epoch seconds) instead. Do not mix the two on one deployment. Every key expires a
window after its last grant; the block key when the block ends.

What is recorded after a call may be sent twice (a retry after a reply lost to a Redis
timeout) and still count once: :meth:`RateLimits.reconcile` *sets* the grant's tokens and
moves the sum by the difference, so a second run moves it by 0; :meth:`RateLimits.release`
finds nothing the second time; a block only ever extends (a repeat lasts from its own clock).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypedDict

import redis
from redis.typing import EncodableT

from routing.limits_lua import ACQUIRE, BLOCK, HEADROOM, RECONCILE, RELEASE
from routing.pipelined import Batch
from workers.errors import RateLimited

Limit = Literal["rpm", "tpm", "blocked"]
_LIMITS: dict[str, Limit] = {"rpm": "rpm", "tpm": "tpm", "blocked": "blocked"}

DEFAULT_PREFIX = "chordal:limits"
DEFAULT_WINDOW_S = 60.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_HEADER_PAIRS = (
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
)


@dataclass(frozen=True)
class Grant:
    """What :meth:`RateLimits.acquire` decided: a reserved slot, or how long until one is free."""

    model: str
    id: str
    tokens: int
    granted: bool
    retry_after: float = 0.0
    limit: Limit | None = None
    at: float = 0.0

    def raise_if_refused(self) -> None:
        """Raise RateLimited, carrying ``retry_after``, unless the call was granted."""
        if self.granted:
            return
        if self.limit == "blocked":
            reason = "is blocked fleet-wide after the provider's rate limit"
        else:
            reason = f"is at its fleet-wide {self.limit} limit"
        raise RateLimited(
            f"{self.model} {reason}; retry in {self.retry_after:.3f}s", self.retry_after
        )


class Headroom(TypedDict):
    """What a deployment has left in the current window (None where it has no limit)."""

    requests: int | None
    tokens: int | None
    blocked_for_s: float


class RateLimits:
    """Fleet-wide RPM/TPM limits per deployment, kept in Redis and shared by every worker.

    ::

        limits = RateLimits(redis.Redis.from_url(url))
        grant = limits.acquire("gpt-4o", rpm=500, tpm=30_000, tokens=1_200)
        grant.raise_if_refused()
        try:
            response = call()
        except ConnectionError:
            limits.release(grant)
            raise
        limits.reconcile(grant, actual_tokens=response.usage.total_tokens)
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        window: float | timedelta = DEFAULT_WINDOW_S,
    ) -> None:
        self.window_s = window.total_seconds() if isinstance(window, timedelta) else float(window)
        if self.window_s <= 0:
            raise ValueError(f"window must be positive, not {window!r}")
        self.prefix = prefix
        self._client = client
        self._acquire = client.register_script(ACQUIRE)
        self._reconcile = client.register_script(RECONCILE)
        self._release = client.register_script(RELEASE)
        self._block = client.register_script(BLOCK)
        self._headroom = client.register_script(HEADROOM)

    def acquire(
        self,
        model: str,
        *,
        rpm: int | None,
        tpm: int | None,
        tokens: int,
        now: float | None = None,
    ) -> Grant:
        """Reserve one request and ``tokens`` tokens of ``model``, both or neither."""
        ask = _Ask.of(model, rpm=rpm, tpm=tpm, tokens=tokens, now=now, window_s=self.window_s)
        return ask.answer(self._acquire(keys=self._keys(model), args=ask.args))

    def queue_acquire(
        self, batch: Batch, model: str, *, rpm: int | None, tpm: int | None, tokens: int
    ) -> Callable[[], Grant]:
        """:meth:`acquire`, sent with the rest of ``batch``; call the result after it ran."""
        ask = _Ask.of(model, rpm=rpm, tpm=tpm, tokens=tokens, now=None, window_s=self.window_s)
        index = batch.script(self._acquire, self._keys(model), ask.args)
        return lambda: ask.answer(batch.result(index))

    def reconcile(self, grant: Grant, *, actual_tokens: int) -> bool:
        """Replace the grant's token estimate with the provider's ``usage``; False if aged out."""
        return bool(self._reconcile(*self._reconcile_call(grant, actual_tokens)))

    def queue_reconcile(self, batch: Batch, grant: Grant, *, actual_tokens: int) -> None:
        """:meth:`reconcile`, sent with the rest of ``batch``."""
        batch.script(self._reconcile, *self._reconcile_call(grant, actual_tokens))

    def release(self, grant: Grant) -> bool:
        """Give back a grant whose call never reached the provider; False if nothing was held."""
        if not grant.granted:
            return False
        log, tokens, _ = self._keys(grant.model)
        return bool(self._release(keys=[log, tokens], args=[grant.id]))

    def queue_release(self, batch: Batch, grant: Grant) -> None:
        """:meth:`release`, sent with the rest of ``batch``."""
        if grant.granted:
            log, tokens, _ = self._keys(grant.model)
            batch.script(self._release, [log, tokens], [grant.id])

    def note_retry_after(self, model: str, seconds: float, *, now: float | None = None) -> float:
        """Block ``model`` fleet-wide for ``seconds`` (a 429's Retry-After); returns the block."""
        if not math.isfinite(seconds) or seconds <= 0:
            return 0.0
        _, _, block = self._keys(model)
        return float(self._block(keys=[block], args=[_now(now), seconds]))

    def queue_retry_after(self, batch: Batch, model: str, seconds: float) -> None:
        """:meth:`note_retry_after`, sent with the rest of ``batch``."""
        if math.isfinite(seconds) and seconds > 0:
            _, _, block = self._keys(model)
            batch.script(self._block, [block], [_now(None), seconds])

    def note_headers(
        self, model: str, headers: Mapping[str, str], *, now: float | None = None
    ) -> float:
        """Block ``model`` until the reset when the provider reports 0 requests or tokens left.

        Returns the seconds now blocked (0.0 if not). A missing or unreadable reset blocks for one
        window: the provider's limits are per minute, so capacity is back within it.
        """
        longest = self._exhausted_for(headers)
        return self.note_retry_after(model, longest, now=now) if longest else 0.0

    def queue_headers(self, batch: Batch, model: str, headers: Mapping[str, str]) -> None:
        """:meth:`note_headers`, sent with the rest of ``batch``."""
        self.queue_retry_after(batch, model, self._exhausted_for(headers))

    def headroom(
        self, model: str, *, rpm: int | None, tpm: int | None, now: float | None = None
    ) -> Headroom:
        """Requests and tokens ``model`` has left in the current window, for metrics."""
        reply = self._headroom(keys=self._keys(model), args=[_now(now), self.window_s])
        return _headroom(reply, rpm=rpm, tpm=tpm)

    def headrooms(
        self, limits: Sequence[tuple[str, int | None, int | None]]
    ) -> dict[str, Headroom]:
        """:meth:`headroom` of each ``(model, rpm, tpm)``, read in one round trip."""
        if not limits:
            return {}
        batch = Batch(self._client)
        args: list[EncodableT] = [_now(None), self.window_s]
        indexes = [batch.script(self._headroom, self._keys(name), args) for name, _, _ in limits]
        batch.execute()
        return {
            name: _headroom(batch.result(index), rpm=rpm, tpm=tpm)
            for (name, rpm, tpm), index in zip(limits, indexes, strict=True)
        }

    def _keys(self, model: str) -> list[str]:
        base = f"{self.prefix}:{model}"
        return [f"{base}:log", f"{base}:tokens", f"{base}:block"]

    def _reconcile_call(
        self, grant: Grant, actual_tokens: int
    ) -> tuple[list[str], list[str | int]]:
        if not grant.granted:
            raise ValueError("a refused grant has nothing to reconcile")
        if actual_tokens < 0:
            raise ValueError(f"actual_tokens must not be negative, not {actual_tokens}")
        _, tokens, _ = self._keys(grant.model)
        return [tokens], [grant.id, actual_tokens]

    def _exhausted_for(self, headers: Mapping[str, str]) -> float:
        """Seconds until the reset of a limit the provider reports at 0; 0.0 if none is."""
        lowered = {key.lower(): value for key, value in headers.items()}
        longest = 0.0
        for remaining_header, reset_header in _HEADER_PAIRS:
            remaining = _int_or_none(lowered.get(remaining_header))
            if remaining is None or remaining > 0:
                continue
            reset = parse_duration(lowered.get(reset_header, ""))
            longest = max(longest, self.window_s if reset is None else reset)
        return longest


@dataclass(frozen=True)
class _Ask:
    """A grant as the acquire script is asked for it, and how to read the answer."""

    model: str
    id: str
    tokens: int
    args: list[str | float]

    @classmethod
    def of(
        cls,
        model: str,
        *,
        rpm: int | None,
        tpm: int | None,
        tokens: int,
        now: float | None,
        window_s: float,
    ) -> _Ask:
        for name, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1 or None, not {limit}")
        if tokens < 0:
            raise ValueError(f"tokens must not be negative, not {tokens}")
        if tpm is not None and tokens > tpm:
            msg = f"{model}: a call of {tokens} tokens can never fit its tpm limit of {tpm}"
            raise ValueError(msg)
        grant_id = uuid.uuid4().hex
        return cls(
            model, grant_id, tokens, [_now(now), window_s, rpm or 0, tpm or 0, tokens, grant_id]
        )

    def answer(self, reply: list[Any]) -> Grant:
        ok, limit_name, wait, at = reply
        return Grant(
            model=self.model,
            id=self.id,
            tokens=self.tokens,
            granted=bool(ok),
            retry_after=float(wait),
            limit=_LIMITS.get(limit_name.decode()),
            at=float(at),
        )


def _headroom(reply: list[Any], *, rpm: int | None, tpm: int | None) -> Headroom:
    count, used, blocked = reply
    return Headroom(
        requests=None if rpm is None else max(0, rpm - int(count)),
        tokens=None if tpm is None else max(0, tpm - int(used)),
        blocked_for_s=float(blocked),
    )


def parse_duration(text: str) -> float | None:
    """Seconds in a reset header: Go-style durations ("1s", "6m0s", "20ms") or plain seconds."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            return None
        seconds = sum(float(number) * _UNIT_S[unit] for number, unit in parts)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _now(now: float | None) -> str:
    # An empty string makes the script read the server's clock.
    return "" if now is None else repr(float(now))
