"""The simulator's counters: outcomes per model, concurrency, per-job calls and arrival windows."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from time import time as wall_clock
from typing import Any

# "in_flight" and "peak_in_flight" are gauges; the other keys only grow until a reset.
# "malformed" counts the "ok" answers whose content breaks the requested JSON schema.
STAT_KEYS = (
    "requests",
    "ok",
    "malformed",
    "errors",
    "rate_limited",
    "over_limit",
    "timeouts",
    "outages",
    "bad_requests",
    "in_flight",
    "peak_in_flight",
    "prompt_tokens",
    "completion_tokens",
)
# Arrival times kept per model for the sliding-window maxima. Past this many arrivals the
# oldest are forgotten, so a maximum covers only the most recent ARRIVALS_KEPT requests.
ARRIVALS_KEPT = 100_000


def max_in_window(times: Iterable[float], window_s: float) -> int:
    """Most of the ascending ``times`` that fall within any ``window_s``-long sliding window.

    A window ending at ``t`` holds the times in ``(t - window_s, t]``, as the rate limiter counts.
    """
    kept: deque[float] = deque()
    best = 0
    for time in times:
        kept.append(time)
        while kept[0] <= time - window_s:
            kept.popleft()
        best = max(best, len(kept))
    return best


class Stats:
    """Request counters per model plus global concurrency, per-job counts and arrival times."""

    def __init__(self) -> None:
        self.models: dict[str, Counter[str]] = {}
        self.jobs: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.answered_attempts: Counter[str] = Counter()
        self.first_answered_at: dict[str, float] = {}
        self.arrivals: dict[str, deque[float]] = {}
        self.admitted: dict[str, deque[float]] = {}
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    def reset(self) -> None:
        """Zero the counters; requests still in flight stay counted as in flight."""
        self.models = {
            name: Counter(in_flight=c["in_flight"], peak_in_flight=c["in_flight"])
            for name, c in self.models.items()
            if c["in_flight"]
        }
        self.jobs.clear()
        self.answered.clear()
        self.answered_attempts.clear()
        self.first_answered_at.clear()
        self.arrivals.clear()
        self.admitted.clear()
        self.requests = 0
        self.peak_in_flight = self.in_flight

    def begin(self, model: str, job: str | None, *, at: float, admitted: bool) -> None:
        """Record a chat request arriving at monotonic time ``at``; ``admitted``: within limits."""
        counters = self.models.setdefault(model, Counter())
        counters["requests"] += 1
        counters["in_flight"] += 1
        counters["peak_in_flight"] = max(counters["peak_in_flight"], counters["in_flight"])
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if job is not None:
            self.jobs[job] += 1
        self.arrivals.setdefault(model, deque(maxlen=ARRIVALS_KEPT)).append(at)
        if admitted:
            self.admitted.setdefault(model, deque(maxlen=ARRIVALS_KEPT)).append(at)

    def end(self, model: str) -> None:
        """Record the end of a chat request, whatever its outcome."""
        self.models[model]["in_flight"] -= 1
        self.in_flight -= 1

    def delivered(self, job: str | None, attempt: str | None = None) -> None:
        """Record an answer that reached its caller: what a provider bills. Per ``attempt``
        (a caller's own name for one try of one job), more than one is a duplicate call."""
        if job is not None:
            self.answered[job] += 1
        if attempt is not None:
            self.answered_attempts[attempt] += 1
            self.first_answered_at.setdefault(attempt, wall_clock())

    def add(self, model: str, key: str, *, amount: int = 1) -> None:
        """Add ``amount`` to counter ``key`` of ``model``."""
        self.models[model][key] += amount

    def snapshot(self, *, window_s: float | None = None) -> dict[str, Any]:
        """Return the counters as JSON-ready data.

        With ``window_s`` every model also reports ``max_in_window`` (most arrivals, refused ones
        included, within any ``window_s`` seconds) and ``max_accepted_in_window`` (the same,
        counting only requests the rate limit admitted).
        """
        models: dict[str, dict[str, int]] = {}
        for name, counters in sorted(self.models.items()):
            models[name] = {key: counters[key] for key in STAT_KEYS}
            if window_s is not None:
                arrived, admitted = self.arrivals.get(name, ()), self.admitted.get(name, ())
                models[name]["max_in_window"] = max_in_window(arrived, window_s)
                models[name]["max_accepted_in_window"] = max_in_window(admitted, window_s)
        snapshot: dict[str, Any] = {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "jobs": dict(self.jobs),
            "answered": dict(self.answered),
            "answered_attempts": dict(self.answered_attempts),
            # When an attempt answered more than once was first answered (wall clock): a drill
            # tells a duplicate a kill explains from one it does not.
            "answered_again": {
                attempt: self.first_answered_at[attempt]
                for attempt, count in self.answered_attempts.items()
                if count > 1
            },
            "models": models,
        }
        if window_s is not None:
            snapshot["window_s"] = window_s
        return snapshot
