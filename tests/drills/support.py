"""What every drill measures and prints: accepted, terminal, lost, duplicate provider calls,
ledger against results, seconds.

A drill starts its own stack (private Valkey, simulator, worker processes), does something
unkind to it, waits for every accepted job to end, and reports a :class:`DrillCounts`. The
counts are printed in pytest's summary (``tests/drills/conftest.py``) and asserted by the drill.

*Duplicate provider calls* come from the simulator: every LLM call carries the attempt it
belongs to (``X-Chordal-Attempt``), and the simulator counts answers it delivered per attempt;
an attempt answered more than once is a duplicate. *Ledger* is the cost ledger's total for the
drill's stack; *results* is the sum of ``cost_usd`` over the jobs that succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery.result import AsyncResult

from agents.client import TERMINAL_STATES, Client
from chordal.simulator.admin import SimulatorAdmin
from routing.ledger import Ledger

REPORTED: list[DrillCounts] = []


@dataclass
class DrillCounts:
    """One drill's figures; ``lost`` counts accepted jobs that never reached a terminal state."""

    drill: str
    accepted: int = 0
    terminal: int = 0
    lost: int = 0
    duplicate_calls: int = 0
    ledger_usd: float = 0.0
    results_usd: float = 0.0
    seconds: float = 0.0
    states: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The one line the summary prints."""
        extra = "".join(f" {key}={value}" for key, value in self.extra.items())
        return (
            f"{self.drill}: accepted={self.accepted} terminal={self.terminal} lost={self.lost} "
            f"duplicate_calls={self.duplicate_calls} ledger=${self.ledger_usd:.6f} "
            f"results=${self.results_usd:.6f} seconds={self.seconds:.1f} states={self.states}"
            f"{extra}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return asdict(self)


def assert_ledger_matches(counts: DrillCounts) -> None:
    """The ledger holds what the results billed, plus the worst case of calls whose outcome is
    unknown (cut off by a kill or a shutdown, charged so spend is never under-counted). It
    rounds each call up to the micro-dollar (as budgets charge), so it may exceed the results
    by at most that per call."""
    calls = int(counts.extra.get("calls", 0)) + int(counts.extra.get("uncertain_calls", 0))
    known = counts.ledger_usd - float(counts.extra.get("uncertain_usd", 0.0))
    assert counts.results_usd <= known + 1e-9
    assert known - counts.results_usd <= calls * 1e-6 + 1e-9


def report(counts: DrillCounts) -> DrillCounts:
    """Keep ``counts`` for the summary and return them."""
    REPORTED.append(counts)
    return counts


def wait_terminal(client: Client, job_ids: Iterable[str], *, timeout: float) -> dict[str, str]:
    """Each job's state once every one is terminal, or when ``timeout`` runs out."""
    pending = list(job_ids)
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        still = []
        for job_id in pending:
            state = AsyncResult(job_id, app=client.app).state
            states[job_id] = state
            if state not in TERMINAL_STATES:
                still.append(job_id)
        pending = still
        if not pending or time.monotonic() >= deadline:
            return states
        time.sleep(0.5)


def answered_calls(simulator: SimulatorAdmin) -> tuple[int, int, list[str]]:
    """Answers the simulator delivered, those beyond the first for any one attempt, and the
    attempts answered more than once."""
    answered = simulator.stats().get("answered_attempts", {})
    twice = sorted(attempt for attempt, count in answered.items() if count > 1)
    return sum(answered.values()), sum(max(0, n - 1) for n in answered.values()), twice


def ledger_usd(client: Client) -> tuple[float, float, int]:
    """What the cost ledger holds for today (a drill's stack is new, so: the drill's calls),
    how much of it is the worst case charged for calls whose outcome is unknown, and how many
    such calls there were."""
    today = datetime.now(UTC).date()
    rows = Ledger(client.app.backend.client).rows(since_day=today)
    total = round(sum(row.cost_usd for row in rows), 6)
    uncertain = round(sum(row.uncertain_cost_usd for row in rows), 6)
    return total, uncertain, sum(row.uncertain for row in rows)


def results_usd(client: Client, job_ids: Iterable[str]) -> float:
    """The sum of ``cost_usd`` over the jobs that succeeded."""
    total = 0.0
    for job_id in job_ids:
        result = AsyncResult(job_id, app=client.app)
        if result.state == "SUCCESS" and isinstance(result.result, dict):
            total += float(result.result.get("cost_usd", 0.0))
    return round(total, 6)


def whereabouts(client: Client, job_ids: Iterable[str]) -> dict[str, list[str]]:
    """Where the broker and Redis still mention each job: its queue entries, kombu's unacked
    hash, a worker's held hash, its leases. What a drill prints for a job that did not end."""
    redis_client = client.app.backend.client
    found: dict[str, list[str]] = {}
    keys = [k.decode() for k in redis_client.keys("*")]
    lists = [k for k in keys if redis_client.type(k) == b"list" and not k.startswith("chordal:")]
    unacked = {t.decode(): v for t, v in redis_client.hgetall("unacked").items()}
    for job_id in job_ids:
        places = [
            f"list {name!r}"
            for name in lists
            if any(job_id.encode() in m for m in redis_client.lrange(name, 0, -1))
        ]
        places += [f"unacked {tag}" for tag, entry in unacked.items() if job_id.encode() in entry]
        places += [
            f"{k}={redis_client.get(k)!r}"
            for k in keys
            if k.startswith("chordal:run:") and job_id in k
        ]
        found[job_id] = places
    return found


def measure(
    drill: str,
    client: Client,
    simulator: SimulatorAdmin,
    job_ids: list[str],
    *,
    started: float,
    timeout: float,
    ledger_before: tuple[float, float, int] = (0.0, 0.0, 0),
) -> DrillCounts:
    """Wait for ``job_ids`` to end and count what a drill reports; ``ledger_before`` is
    :func:`ledger_usd` when the drill began, for a stack that served jobs before it."""
    states = wait_terminal(client, job_ids, timeout=timeout)
    by_state: dict[str, int] = {}
    for state in states.values():
        by_state[state] = by_state.get(state, 0) + 1
    terminal = sum(1 for state in states.values() if state in TERMINAL_STATES)
    calls, duplicates, twice = answered_calls(simulator)
    missing = [job_id for job_id, state in states.items() if state not in TERMINAL_STATES]
    total, uncertain_total, uncertain_count = ledger_usd(client)
    ledger = round(total - ledger_before[0], 6)
    uncertain = round(uncertain_total - ledger_before[1], 6)
    uncertain_calls = uncertain_count - ledger_before[2]
    errors = sorted(
        {
            f"{type(info).__name__}: {str(info)[:160]}"
            for job_id, state in states.items()
            if state == "FAILURE" and (info := AsyncResult(job_id, app=client.app).info) is not None
        }
    )
    return report(
        DrillCounts(
            drill=drill,
            accepted=len(job_ids),
            terminal=terminal,
            lost=len(job_ids) - terminal,
            duplicate_calls=duplicates,
            ledger_usd=ledger,
            results_usd=results_usd(client, job_ids),
            seconds=time.monotonic() - started,
            states=by_state,
            extra={
                "calls": calls,
                "uncertain_calls": uncertain_calls,
                "uncertain_usd": uncertain,
                **({"errors": errors} if errors else {}),
                **({"answered_twice": twice[:5]} if twice else {}),
                **({"not_ended": whereabouts(client, missing[:5])} if missing else {}),
            },
        )
    )
