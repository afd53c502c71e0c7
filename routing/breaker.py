"""A circuit breaker per model deployment, shared by every worker on every pod through Redis.

States::

    closed ──(failure or slow-call rate reached over the window)──> open
    open ──(open period over)──> half_open ──(probe ok)──> closed
                                     └─────(probe failed or slow)──> open, for longer

Each model is one Redis hash (``<prefix><model>``). Every transition is a Lua script that reads,
changes and rewrites the hash: atomic across threads, gevent, processes and pods, one round trip.

* **Window.** A ring of ``WINDOW_BUCKETS`` counters (calls, failures, slow calls), each over
  ``window_s / WINDOW_BUCKETS`` s: a call touches one bucket and sums ten, O(1), and the hash
  stays a fixed size however busy the model (a sorted set of calls would grow with traffic).
  The price: a call leaves the window between ``0.9 * window_s`` and ``window_s`` after it.
* **Trip.** Once the window holds ``min_calls`` calls, the breaker opens when
  ``failures / calls >= failure_rate`` or ``slow / calls >= slow_call_rate``. A call is slow
  when ``latency_s >= slow_call_s``, whether or not it succeeded.
* **What counts as a failure.** Only retryable errors (the caller says which). A
  non-retryable error -- a 400, a content-policy refusal -- proves the deployment answered, so
  it counts as a successful call (its latency still counts towards the slow-call rate).
* **Open period.** ``min(open_s * backoff ** (n - 1), max_open_s)``, where ``n`` counts the
  opens in the current streak; a streak ends once the breaker has stayed closed for a whole
  window. Jitter shortens each period by up to ``jitter`` of it (so ``max_open_s`` stays a hard
  cap), which spreads the probes of models that an outage opened together.
* **Half-open.** Exactly one probe fleet-wide: :meth:`Breakers.allow` hands out a lease with a
  random token that expires after ``probe_lease_s``, so a probe whose worker died frees the
  way for another. Only the result recorded with the current token decides: a probe that
  succeeded and was not slow closes the breaker (with an empty window); otherwise it reopens.
* **Stale results.** Results of calls let through before the breaker opened, and of probes
  whose lease was taken over, are ignored: they must not extend or end an open period.
* **Time.** ``now`` defaults to Redis ``TIME``: one clock for the fleet; tests pass ``now``.
* **Expiry.** Every write sets a TTL of the remaining open period plus ``2 * max(window_s,
  max_open_s, probe_lease_s)``, so an idle model's key disappears; a missing key reads as
  closed with an empty window. Only an operator's open-until-closed hold has no TTL.

:meth:`Breakers.allowed_models` and :meth:`Breakers.states` read several keys in one script;
on Redis Cluster put a hash tag in the prefix (``"chordal:breaker:{b}:"``).
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self, cast

import redis
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_POLICY", "BreakerPolicy", "BreakerState", "Breakers", "Permit", "State"]

State = Literal["closed", "open", "half_open"]

WINDOW_BUCKETS = 10

# Shared by every script. ARGV[1] is the policy (JSON), ARGV[2] the time ('' = Redis TIME).
_PRELUDE = """
local P = cjson.decode(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local B = P.buckets

local function fmt(x) return string.format('%.17g', x) end
local function num(h, f) return tonumber(h[f]) or 0 end

local function load(key)
  local raw = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  return h
end

local function store(key, h)
  redis.call('DEL', key)
  local args = {}
  for f, v in pairs(h) do args[#args + 1] = f; args[#args + 1] = v end
  redis.call('HSET', key, unpack(args))
  local until_ = num(h, 'opened_until')
  if not (h.state == 'open' and until_ < 0) then
    local ttl = math.max(until_ - now, 0) + P.keep_s
    redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
  end
end

local function state_of(h)
  if h.state ~= 'open' then return 'closed' end
  local until_ = num(h, 'opened_until')
  if until_ < 0 or now < until_ then return 'open' end
  return 'half_open'
end

local function shown_until(h)
  if h.state ~= 'open' then return '' end
  return num(h, 'opened_until') < 0 and 'inf' or h.opened_until
end

local function streak(h)
  if h.state ~= 'open' and (h.closed_at == nil or now - num(h, 'closed_at') >= P.window_s) then
    return 0
  end
  return num(h, 'open_count')
end

local function window(h)
  local id = math.floor(now / P.bucket_s)
  local calls, failures, slow = 0, 0, 0
  for i = 0, B - 1 do
    local b = tonumber(h['b' .. i])
    if b and b > id - B then
      calls = calls + num(h, 'c' .. i)
      failures = failures + num(h, 'f' .. i)
      slow = slow + num(h, 's' .. i)
    end
  end
  return calls, failures, slow
end

local function clear_window(h)
  for i = 0, B - 1 do
    h['b' .. i], h['c' .. i], h['f' .. i], h['s' .. i] = nil, nil, nil, nil
  end
end

local function open(h, count, u)
  local period = math.min(P.open_s * P.backoff ^ (count - 1), P.max_open_s) * (1 - P.jitter * u)
  clear_window(h)
  h.state, h.opened_until, h.open_count = 'open', fmt(now + period), fmt(count)
  h.forced, h.probe_token, h.probe_until = nil, nil, nil
end

local function summary(h)
  local calls, failures, slow = window(h)
  local free = (h.probe_token == nil or num(h, 'probe_until') <= now) and 1 or 0
  return {state_of(h), calls, failures, slow, shown_until(h), streak(h), h.forced and 1 or 0, free}
end
"""

# ARGV[3]: a fresh probe token.
_ALLOW = """
local key = KEYS[1]
local h = load(key)
local s = state_of(h)
if s == 'closed' then return {1, s, '', ''} end
if s == 'open' then return {0, s, '', shown_until(h)} end
if h.probe_token ~= nil and num(h, 'probe_until') > now then return {0, s, '', h.probe_until} end
h.probe_token, h.probe_until = ARGV[3], fmt(now + P.probe_lease_s)
store(key, h)
return {1, s, ARGV[3], ''}
"""

# ARGV[3..7]: ok ('1'/'0'), latency_s, retryable ('1'/'0'), probe token or '', jitter draw.
_RECORD = """
local key = KEYS[1]
local h = load(key)
local s = state_of(h)
local failed = ARGV[3] == '0' and ARGV[5] == '1'
local slow = tonumber(ARGV[4]) >= P.slow_call_s
local u = tonumber(ARGV[7])
if s == 'closed' then
  local id = math.floor(now / P.bucket_s)
  local i = id % B
  if (tonumber(h['b' .. i]) or -1) < id then
    h['b' .. i], h['c' .. i], h['f' .. i], h['s' .. i] = fmt(id), '0', '0', '0'
  end
  h['c' .. i] = fmt(num(h, 'c' .. i) + 1)
  if failed then h['f' .. i] = fmt(num(h, 'f' .. i) + 1) end
  if slow then h['s' .. i] = fmt(num(h, 's' .. i) + 1) end
  h.state = 'closed'
  local calls, failures, slow_calls = window(h)
  -- Divide rather than multiply: 3 / 10 >= 0.3 holds in floating point, 3 >= 0.3 * 10 does not.
  if calls >= P.min_calls and (failures / calls >= P.failure_rate
      or slow_calls / calls >= P.slow_call_rate) then
    open(h, streak(h) + 1, u)
  end
  store(key, h)
elseif ARGV[6] ~= '' and ARGV[6] == h.probe_token then
  if failed or slow then open(h, streak(h) + 1, u) else
    h.state, h.closed_at, h.opened_until = 'closed', fmt(now), nil
    h.forced, h.probe_token, h.probe_until = nil, nil, nil
  end
  store(key, h)
end
return summary(h)
"""

# ARGV[3]: seconds to hold open, or '' to hold until force_close.
_FORCE_OPEN = """
local key = KEYS[1]
local h = load(key)
local seconds = tonumber(ARGV[3])
clear_window(h)
h.state, h.forced, h.probe_token, h.probe_until = 'open', '1', nil, nil
h.opened_until = seconds and fmt(now + seconds) or '-1'
store(key, h)
return summary(h)
"""

_PEEK = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = summary(load(key)) end
return out
"""


class BreakerPolicy(BaseModel):
    """When a breaker opens and for how long; durations in seconds.

    Examples::

        BreakerPolicy()  # open when half of >= 10 calls in the last minute fail, or 80% take 30 s
        BreakerPolicy(window_s=30, min_calls=20, failure_rate=0.25)  # stricter, for a busy model
        BreakerPolicy(open_s=5, backoff=3, max_open_s=600)  # probe soon, back off hard
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_s: float = Field(60.0, gt=0)
    min_calls: int = Field(10, ge=1)
    failure_rate: float = Field(0.5, gt=0, le=1)
    slow_call_s: float = Field(30.0, gt=0)
    slow_call_rate: float = Field(0.8, gt=0, le=1)
    open_s: float = Field(10.0, gt=0)
    max_open_s: float = Field(300.0, gt=0)
    backoff: float = Field(2.0, ge=1)
    jitter: float = Field(0.2, ge=0, lt=1)
    probe_lease_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _cap_not_below_first_period(self) -> Self:
        if self.max_open_s < self.open_s:
            msg = f"max_open_s={self.max_open_s} is below open_s={self.open_s}: raise max_open_s"
            raise ValueError(msg)
        return self


DEFAULT_POLICY = BreakerPolicy()


@dataclass(frozen=True)
class Permit:
    """The answer to "may I call this model now?"; a probe must hand ``probe_token`` to record."""

    model: str
    allowed: bool
    state: State
    probe_token: str | None = None
    retry_at: float | None = None
    """When a refused caller may ask again (``math.inf`` while an operator holds it open)."""


@dataclass(frozen=True)
class BreakerState:
    """A model's breaker as seen at one moment (``opened_until`` is ``math.inf`` when held)."""

    model: str
    state: State
    failures: int
    calls: int
    slow: int
    opened_until: float | None
    open_count: int
    forced: bool


class Breakers:
    """Circuit breakers for many models, kept in Redis under ``prefix``."""

    def __init__(
        self,
        client: redis.Redis,
        policy: BreakerPolicy = DEFAULT_POLICY,
        *,
        prefix: str = "chordal:breaker:",
    ) -> None:
        if not prefix:
            raise ValueError("prefix must not be empty: breaker keys would mix with other data")
        self.policy = policy
        self.prefix = prefix
        derived = {"buckets": WINDOW_BUCKETS, "bucket_s": policy.window_s / WINDOW_BUCKETS}
        derived["keep_s"] = 2 * max(policy.window_s, policy.max_open_s, policy.probe_lease_s)
        self._policy_json = json.dumps(policy.model_dump() | derived)
        self._allow = client.register_script(_PRELUDE + _ALLOW)
        self._record = client.register_script(_PRELUDE + _RECORD)
        self._force_open = client.register_script(_PRELUDE + _FORCE_OPEN)
        self._peek = client.register_script(_PRELUDE + _PEEK)
        self._client = client

    def key(self, model: str) -> str:
        """The Redis hash holding ``model``'s breaker."""
        return self.prefix + model

    def allow(self, model: str, *, now: float | None = None) -> Permit:
        """Whether to call ``model`` now; in half-open, the one caller let through is the probe."""
        allowed, state, token, retry_at = self._allow(
            keys=[self.key(model)], args=[*self._args(now), secrets.token_hex(8)]
        )
        return Permit(
            model=model,
            allowed=bool(allowed),
            state=cast(State, _text(state)),
            probe_token=_text(token) or None,
            retry_at=_time(retry_at),
        )

    def allowed_models(self, models: Sequence[str], *, now: float | None = None) -> set[str]:
        """The models a router may pick: closed, or half-open with the probe lease free.

        Takes no lease: the router still calls :meth:`allow` on its pick, which may refuse if
        another worker took the probe in between.
        """
        return {
            s.model
            for s, free in self._read(models, now)
            if s.state == "closed" or (s.state == "half_open" and free)
        }

    def record(
        self,
        model: str,
        *,
        ok: bool,
        latency_s: float,
        retryable: bool = True,
        probe_token: str | None = None,
        now: float | None = None,
    ) -> BreakerState:
        """Record a call's outcome (a probe passes its token) and return the breaker after it."""
        raw = self._record(
            keys=[self.key(model)],
            args=[
                *self._args(now),
                "1" if ok else "0",
                repr(float(latency_s)),
                "1" if retryable else "0",
                probe_token or "",
                repr(random.random()),  # the jitter draw
            ],
        )
        return _state(model, raw)

    def state(self, model: str, *, now: float | None = None) -> BreakerState:
        """``model``'s breaker now."""
        return self.states([model], now=now)[0]

    def states(self, models: Sequence[str], *, now: float | None = None) -> list[BreakerState]:
        """The breakers of ``models``, in order, read in one round trip."""
        return [s for s, _ in self._read(models, now)]

    def force_open(
        self, model: str, *, seconds: float | None = None, now: float | None = None
    ) -> BreakerState:
        """Hold ``model`` open for ``seconds`` (then half-open, as usual) or until force_close."""
        if seconds is not None and seconds <= 0:
            raise ValueError(f"seconds={seconds} must be positive, or None to hold until closed")
        extra = "" if seconds is None else repr(float(seconds))
        raw = self._force_open(keys=[self.key(model)], args=[*self._args(now), extra])
        return _state(model, raw)

    def force_close(self, model: str) -> None:
        """Close ``model``'s breaker with an empty window and a fresh backoff streak."""
        self._client.delete(self.key(model))

    def _read(self, models: Sequence[str], now: float | None) -> list[tuple[BreakerState, bool]]:
        if not models:
            return []
        rows = self._peek(keys=[self.key(m) for m in models], args=self._args(now))
        return [(_state(m, row), bool(row[7])) for m, row in zip(models, rows, strict=True)]

    def _args(self, now: float | None) -> list[str]:
        return [self._policy_json, "" if now is None else repr(float(now))]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _time(value: bytes | str) -> float | None:
    text = _text(value)
    return float(text) if text else None


def _state(model: str, raw: Sequence[Any]) -> BreakerState:
    state, calls, failures, slow, opened_until, open_count, forced, _ = raw
    return BreakerState(
        model=model,
        state=cast(State, _text(state)),
        calls=int(calls),
        failures=int(failures),
        slow=int(slow),
        opened_until=_time(opened_until),
        open_count=int(open_count),
        forced=bool(forced),
    )
