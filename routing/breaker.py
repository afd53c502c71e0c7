"""A circuit breaker per model deployment, shared by every worker on every pod through Redis.

States::

    closed ──(failure or slow-call rate reached over the window)──> open
    open ──(open period over)──> half_open ──(probe ok)──> closed
                                     └─────(probe failed or slow)──> open, for longer

Each model is one Redis hash (``<prefix><model>``). Every transition is a Lua script
(:mod:`routing.breaker_lua`) that reads, changes and rewrites the hash: atomic across threads,
gevent, processes and pods, one round trip.

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

from routing.breaker_lua import ALLOW, FORCE_OPEN, PEEK, PRELUDE, RECORD
from routing.pipelined import Batch

__all__ = ["DEFAULT_POLICY", "BreakerPolicy", "BreakerState", "Breakers", "Permit", "State"]

State = Literal["closed", "open", "half_open"]

WINDOW_BUCKETS = 10


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
        self._allow = client.register_script(PRELUDE + ALLOW)
        self._record = client.register_script(PRELUDE + RECORD)
        self._force_open = client.register_script(PRELUDE + FORCE_OPEN)
        self._peek = client.register_script(PRELUDE + PEEK)
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
        args = self._record_args(
            ok=ok, latency_s=latency_s, retryable=retryable, token=probe_token, now=now
        )
        return _state(model, self._record(keys=[self.key(model)], args=args))

    def queue_record(
        self,
        batch: Batch,
        model: str,
        *,
        ok: bool,
        latency_s: float,
        retryable: bool = True,
        probe_token: str | None = None,
    ) -> None:
        """:meth:`record`, sent with the rest of ``batch``."""
        args = self._record_args(
            ok=ok, latency_s=latency_s, retryable=retryable, token=probe_token, now=None
        )
        batch.script(self._record, [self.key(model)], args)

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

    def _record_args(
        self, *, ok: bool, latency_s: float, retryable: bool, token: str | None, now: float | None
    ) -> list[str]:
        flags = ["1" if ok else "0", repr(float(latency_s)), "1" if retryable else "0"]
        return [*self._args(now), *flags, token or "", repr(random.random())]  # draw for jitter


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
