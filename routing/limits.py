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
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypedDict

import redis

from workers.errors import RateLimited

Limit = Literal["rpm", "tpm", "blocked"]
_LIMITS: dict[str, Limit] = {"rpm": "rpm", "tpm": "tpm", "blocked": "blocked"}

DEFAULT_PREFIX = "chordal:limits"
DEFAULT_WINDOW_S = 60.0

_LIB = """
local function clock(arg)
  local now = tonumber(arg)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
-- Drop grants at or before `since` from the log, and their tokens from the running sum.
local function purge(log, tokens, since)
  while true do
    local old = redis.call('ZRANGEBYSCORE', log, '-inf', fmt(since), 'LIMIT', 0, 1000)
    if #old == 0 then return end
    local freed = 0
    for _, amount in ipairs(redis.call('HMGET', tokens, unpack(old))) do
      freed = freed + (tonumber(amount) or 0)
    end
    redis.call('ZREM', log, unpack(old))
    redis.call('HDEL', tokens, unpack(old))
    redis.call('HINCRBY', tokens, 'sum', -freed)
  end
end
"""

# KEYS: log, tokens, block. ARGV: now, window, rpm (0: none), tpm (0: none), tokens, grant id.
_ACQUIRE = (
    _LIB
    + """
local now, window = clock(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, want = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local blocked = tonumber(redis.call('GET', KEYS[3]) or '0')
if blocked > now then return {0, 'blocked', fmt(blocked - now), fmt(now)} end
purge(KEYS[1], KEYS[2], now - window)
local wait, limit = 0, ''
if rpm > 0 then
  local count = redis.call('ZCARD', KEYS[1])
  if count >= rpm then
    -- The grant whose ageing-out leaves rpm - 1 in the window.
    local frees = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
    wait, limit = tonumber(frees[2]) + window - now, 'rpm'
  end
end
if tpm > 0 then
  local excess = tonumber(redis.call('HGET', KEYS[2], 'sum') or '0') + want - tpm
  if excess > 0 then
    -- Walk the oldest grants until enough tokens have aged out.
    local tpm_wait, start, freed = window, 0, 0
    while freed < excess do
      local page = redis.call('ZRANGE', KEYS[1], start, start + 99, 'WITHSCORES')
      if #page == 0 then break end
      local ids = {}
      for i = 1, #page, 2 do ids[#ids + 1] = page[i] end
      local amounts = redis.call('HMGET', KEYS[2], unpack(ids))
      for j = 1, #ids do
        freed = freed + (tonumber(amounts[j]) or 0)
        if freed >= excess then
          tpm_wait = tonumber(page[2 * j]) + window - now
          break
        end
      end
      start = start + 100
    end
    if tpm_wait > wait then wait, limit = tpm_wait, 'tpm' end
  end
end
if limit ~= '' then return {0, limit, fmt(wait), fmt(now)} end
redis.call('ZADD', KEYS[1], fmt(now), ARGV[6])
redis.call('HSET', KEYS[2], ARGV[6], want)
redis.call('HINCRBY', KEYS[2], 'sum', want)
local ttl = math.ceil(window * 1000)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {1, '', fmt(0), fmt(now)}
"""
)

# KEYS: tokens. ARGV: grant id, actual tokens. A grant already aged out has nothing to correct.
_RECONCILE = """
local before = redis.call('HGET', KEYS[1], ARGV[1])
if not before then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'sum', tonumber(ARGV[2]) - tonumber(before))
return 1
"""

# KEYS: log, tokens. ARGV: grant id.
_RELEASE = """
local amount = redis.call('HGET', KEYS[2], ARGV[1])
if not amount then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'sum', -tonumber(amount))
return 1
"""

# KEYS: block. ARGV: now, seconds. A block is only ever extended, never shortened.
_BLOCK = (
    _LIB
    + """
local now, seconds = clock(ARGV[1]), tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + seconds > current then
  redis.call('SET', KEYS[1], fmt(now + seconds), 'PX', math.max(1, math.ceil(seconds * 1000)))
  return fmt(seconds)
end
return fmt(current - now)
"""
)

# KEYS: log, tokens, block. ARGV: now, window.
_HEADROOM = (
    _LIB
    + """
local now = clock(ARGV[1])
purge(KEYS[1], KEYS[2], now - tonumber(ARGV[2]))
local blocked = tonumber(redis.call('GET', KEYS[3]) or '0') - now
local used = tonumber(redis.call('HGET', KEYS[2], 'sum') or '0')
return {redis.call('ZCARD', KEYS[1]), used, fmt(math.max(0, blocked))}
"""
)

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
        self._acquire = client.register_script(_ACQUIRE)
        self._reconcile = client.register_script(_RECONCILE)
        self._release = client.register_script(_RELEASE)
        self._block = client.register_script(_BLOCK)
        self._headroom = client.register_script(_HEADROOM)

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
        for name, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1 or None, not {limit}")
        if tokens < 0:
            raise ValueError(f"tokens must not be negative, not {tokens}")
        if tpm is not None and tokens > tpm:
            msg = f"{model}: a call of {tokens} tokens can never fit its tpm limit of {tpm}"
            raise ValueError(msg)
        grant_id = uuid.uuid4().hex
        args: list[str | float] = [_now(now), self.window_s, rpm or 0, tpm or 0, tokens, grant_id]
        ok, limit_name, wait, at = self._acquire(keys=self._keys(model), args=args)
        return Grant(
            model=model,
            id=grant_id,
            tokens=tokens,
            granted=bool(ok),
            retry_after=float(wait),
            limit=_LIMITS.get(limit_name.decode()),
            at=float(at),
        )

    def reconcile(self, grant: Grant, *, actual_tokens: int) -> bool:
        """Replace the grant's token estimate with the provider's ``usage``; False if aged out."""
        if not grant.granted:
            raise ValueError("a refused grant has nothing to reconcile")
        if actual_tokens < 0:
            raise ValueError(f"actual_tokens must not be negative, not {actual_tokens}")
        _, tokens, _ = self._keys(grant.model)
        return bool(self._reconcile(keys=[tokens], args=[grant.id, actual_tokens]))

    def release(self, grant: Grant) -> bool:
        """Give back a grant whose call never reached the provider; False if nothing was held."""
        if not grant.granted:
            return False
        log, tokens, _ = self._keys(grant.model)
        return bool(self._release(keys=[log, tokens], args=[grant.id]))

    def note_retry_after(self, model: str, seconds: float, *, now: float | None = None) -> float:
        """Block ``model`` fleet-wide for ``seconds`` (a 429's Retry-After); returns the block."""
        if not math.isfinite(seconds) or seconds <= 0:
            return 0.0
        _, _, block = self._keys(model)
        return float(self._block(keys=[block], args=[_now(now), seconds]))

    def note_headers(
        self, model: str, headers: Mapping[str, str], *, now: float | None = None
    ) -> float:
        """Block ``model`` until the reset when the provider reports 0 requests or tokens left.

        Returns the seconds now blocked (0.0 if not). A missing or unreadable reset blocks for one
        window: the provider's limits are per minute, so capacity is back within it.
        """
        lowered = {key.lower(): value for key, value in headers.items()}
        longest = 0.0
        for remaining_header, reset_header in _HEADER_PAIRS:
            remaining = _int_or_none(lowered.get(remaining_header))
            if remaining is None or remaining > 0:
                continue
            reset = parse_duration(lowered.get(reset_header, ""))
            longest = max(longest, self.window_s if reset is None else reset)
        return self.note_retry_after(model, longest, now=now) if longest else 0.0

    def headroom(
        self, model: str, *, rpm: int | None, tpm: int | None, now: float | None = None
    ) -> Headroom:
        """Requests and tokens ``model`` has left in the current window, for metrics."""
        count, used, blocked = self._headroom(
            keys=self._keys(model), args=[_now(now), self.window_s]
        )
        return Headroom(
            requests=None if rpm is None else max(0, rpm - int(count)),
            tokens=None if tpm is None else max(0, tpm - int(used)),
            blocked_for_s=float(blocked),
        )

    def _keys(self, model: str) -> list[str]:
        base = f"{self.prefix}:{model}"
        return [f"{base}:log", f"{base}:tokens", f"{base}:block"]


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
