"""Live call latency per model, shared by every worker through Redis.

Workers :meth:`LatencyBoard.record` each real LLM call; the router reads a moving p50/p95 per
model with :meth:`LatencyBoard.estimates`, seeded from the catalog's ``expected_latency_s``
while a model has too few recent samples.

Design: each model has one capped Redis list of its last ``window`` samples, newest first,
written as ``"<unix time> <seconds>"``. A record is one pipelined ``LPUSH`` + ``LTRIM`` +
``EXPIRE`` (one round trip); percentiles are computed client-side from the list.

- Bounded memory: ``window`` short strings per model, and a model's key expires once nobody
  called it for ``max_age_s``.
- Follows a change within tens of calls: the estimate is plain order statistics over the last
  ``window`` calls (50 by default), so the p50 moves after ``window / 2`` calls at the new
  latency and the p95 within a handful. Time-decayed buckets would follow time, not calls, and
  a model that serves few calls would lag behind its own change.
- Old samples do not stick: samples older than ``max_age_s`` are ignored, so a model the router
  stopped choosing because it was slow falls back to its catalog latency and gets tried again
  rather than being judged forever on an outage it may have recovered from.
- Cheap reads: the router asks for every candidate at once, one pipelined ``LRANGE`` per model
  in a single round trip, and keeps the result in process for ``cache_s`` (1 s), so a busy
  router reads Redis about once a second, not once per job. The cache holds one entry per
  model name asked for, i.e. per catalog model.

The board is advisory: a Redis error while recording is logged and dropped (a finished LLM call
must not fail because its latency could not be stored), and a failed read falls back to the
catalog figures for ``cache_s``. Give the client short socket timeouts: redis-py's default
retries would hold the router for seconds on every refresh while Redis is down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import redis
from redis.client import Pipeline

from routing.pipelined import Batch

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "chordal:latency:"

LatencySource = Literal["live", "catalog"]


@dataclass(frozen=True)
class LatencyEstimate:
    """A model's expected call latency in seconds, and where the figures come from.

    ``samples`` counts the recent live samples seen, also when there were too few to use and
    ``source`` is ``"catalog"``.
    """

    p50: float
    p95: float
    samples: int
    source: LatencySource


@dataclass(frozen=True)
class _Live:
    p50: float
    p95: float
    samples: int
    fetched_at: float


class LatencyBoard:
    """Per-model latency samples in Redis, written by workers and read by the router.

    Usage (``seconds`` measured around the call, ``catalog`` a resolved catalog)::

        board = LatencyBoard(redis.Redis.from_url(url))
        board.record("gpt-4o-mini", seconds)
        board.estimates({m.name: m.expected_latency_s for m in catalog.models})
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        window: int = 50,
        min_samples: int = 5,
        max_age_s: float = 300.0,
        cache_s: float = 1.0,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must keep at least one sample, not {window}")
        if not 1 <= min_samples <= window:
            msg = f"min_samples must lie between 1 and window ({window}), not {min_samples}"
            raise ValueError(msg)
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, not {max_age_s}")
        if not cache_s >= 0:
            raise ValueError(f"cache_s cannot be negative ({cache_s})")
        self._client = client
        self.window = window
        self.min_samples = min_samples
        self.max_age_s = max_age_s
        self.cache_s = cache_s
        self.prefix = prefix
        self._clock = clock
        self._cache: dict[str, _Live] = {}
        self._lock = threading.Lock()

    def key(self, model: str) -> str:
        """The Redis list holding ``model``'s samples."""
        return f"{self.prefix}{model}"

    def record(self, model: str, seconds: float) -> None:
        """Add one call's latency for ``model``; logs, never raises, if Redis is unreachable."""
        try:
            with self._client.pipeline() as pipe:
                self._queue(pipe, model, seconds)
                pipe.execute()
        except redis.RedisError as exc:
            self._dropped(model, seconds, exc)

    def queue_record(self, batch: Batch, model: str, seconds: float) -> None:
        """:meth:`record`, sent with the rest of ``batch``; its errors are logged, as there."""
        batch.advisory(
            lambda pipe: self._queue(pipe, model, seconds),
            on_error=lambda exc: self._dropped(model, seconds, exc),
        )

    def _queue(self, pipe: Pipeline, model: str, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"a latency is a finite, non-negative number of seconds: {seconds}")
        key = self.key(model)
        pipe.lpush(key, f"{self._clock():.3f} {seconds:.6f}")
        pipe.ltrim(key, 0, self.window - 1)
        pipe.expire(key, math.ceil(self.max_age_s))

    def _dropped(self, model: str, seconds: float, error: Exception) -> None:
        logger.warning("could not record %s's latency (%.3f s)", model, seconds, exc_info=error)

    def estimates(self, models: Mapping[str, float]) -> dict[str, LatencyEstimate]:
        """p50/p95 per model, live when it has ``min_samples`` recent samples, else its seed.

        ``models`` maps each model name to its catalog latency; the models whose cached figures
        are older than ``cache_s`` are read from Redis together, in one round trip.
        """
        live = self._live(list(models))
        return {name: self._estimate(seed, live[name]) for name, seed in models.items()}

    def _estimate(self, seed: float, live: _Live) -> LatencyEstimate:
        if live.samples >= self.min_samples:
            return LatencyEstimate(live.p50, live.p95, live.samples, "live")
        return LatencyEstimate(seed, seed, live.samples, "catalog")

    def _live(self, models: Sequence[str]) -> dict[str, _Live]:
        now = self._clock()
        with self._lock:
            found = {
                name: entry
                for name in models
                if (entry := self._cache.get(name)) is not None
                # A clock set back makes an entry look fresh forever; treat it as stale.
                and 0 <= now - entry.fetched_at < self.cache_s
            }
        stale = [name for name in dict.fromkeys(models) if name not in found]
        if stale:
            fetched = self._fetch(stale, now=now)
            with self._lock:
                self._cache.update(fetched)
            found.update(fetched)
        return found

    def _fetch(self, models: Sequence[str], *, now: float) -> dict[str, _Live]:
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for name in models:
                    pipe.lrange(self.key(name), 0, self.window - 1)
                lists = pipe.execute()
        except redis.RedisError:
            logger.warning("could not read live latencies; using catalog figures", exc_info=True)
            lists = [[] for _ in models]
        return {
            name: _summarise(_recent(raw, now=now, max_age_s=self.max_age_s), fetched_at=now)
            for name, raw in zip(models, lists, strict=True)
        }


def _recent(raw: Sequence[bytes | str], *, now: float, max_age_s: float) -> list[float]:
    samples = []
    for item in raw:
        text = item.decode() if isinstance(item, bytes) else item
        try:
            at, seconds = (float(part) for part in text.split(" ", 1))
        except ValueError:
            continue
        if now - at <= max_age_s:
            samples.append(seconds)
    return samples


def _summarise(samples: list[float], *, fetched_at: float) -> _Live:
    if not samples:
        return _Live(0.0, 0.0, 0, fetched_at)
    ordered = sorted(samples)
    return _Live(percentile(ordered, 0.50), percentile(ordered, 0.95), len(ordered), fetched_at)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of sorted, non-empty ``ordered``, interpolated linearly.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    """
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
