"""Where a one-agent job's round trip goes, stage by stage, from Celery task events.

Each job runs twice under one task id: the router task (``chordal.route``) replaces itself with
the agent task (``chordal.agent``) on a tier worker. The producer's ``task-sent`` events and the
workers' ``task-received``/``task-started``/``task-succeeded`` events, all stamped by one clock,
cut the round trip into stages; the caller's own send and receive times close it.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from celery.result import AsyncResult

from bench.events import Event, EventLog

if TYPE_CHECKING:
    from agents.client import Client

JobFor = Callable[[int], dict[str, Any]]
RESULT_TIMEOUT_S = 30.0

ROUTE = "chordal.route"
AGENT = "chordal.agent"
STAGES = (
    "Client.submit until the message is published",
    "hop 1: broker to the router worker",
    "router: received until started",
    "router task: route, ROUTED state, hand-off (publish the agent task)",
    "hop 2: broker to the tier worker",
    "tier worker: received until started",
    # The worker sends task-succeeded after storing (and publishing) the result: the caller
    # can hold it before that event, so the last stage runs to the caller.
    "agent task: admission, LLM call, bookkeeping, result to the caller",
)


@dataclass(frozen=True)
class Mark:
    """One timed job: its id and the caller's wall-clock send and receive times."""

    job_id: str
    sent: float
    received: float


def _at(events: list[Event], kind: str, *, after: float = 0.0, **fields: str) -> Event | None:
    found = [
        e
        for e in events
        if e.get("type") == kind
        and float(e["timestamp"]) >= after
        and all(e.get(k) == v for k, v in fields.items())
    ]
    return min(found, key=lambda e: float(e["timestamp"])) if found else None


def _job_stages(mark: Mark, events: list[Event]) -> list[float] | None:
    sent = _at(events, "task-sent", name=ROUTE)
    routed_in = _at(events, "task-received", name=ROUTE)
    agent_out = _at(events, "task-sent", name=AGENT)
    agent_in = _at(events, "task-received", name=AGENT)
    if sent is None or routed_in is None or agent_out is None or agent_in is None:
        return None
    route_start = _at(events, "task-started", hostname=routed_in["hostname"],
                      after=float(routed_in["timestamp"]))  # fmt: skip
    agent_start = _at(events, "task-started", hostname=agent_in["hostname"],
                      after=float(agent_in["timestamp"]))  # fmt: skip
    if route_start is None or agent_start is None:
        return None
    points = [mark.sent, *(float(e["timestamp"]) for e in (sent, routed_in, route_start,
              agent_out, agent_in, agent_start)), mark.received]  # fmt: skip
    return [later - earlier for earlier, later in pairwise(points)]


def traced_round_trips(client: Client, job: JobFor, count: int) -> tuple[list[float], list[Mark]]:
    """Submit ``job(n)`` and wait for its result, one at a time: seconds each, and the marks."""
    trips, marks = [], []
    for n in range(count):
        sent, started = time.time(), time.perf_counter()
        job_id = client.submit(job(n))
        AsyncResult(job_id, app=client.app).get(timeout=RESULT_TIMEOUT_S)
        trips.append(time.perf_counter() - started)
        marks.append(Mark(job_id, sent, time.time()))
    return trips, marks


def stage_medians(log: EventLog, marks: Sequence[Mark]) -> dict[str, float]:
    """Median milliseconds per stage over ``marks`` (jobs missing an event are left out)."""
    if marks:
        # Task events are buffered by the workers for a moment before they are sent.
        log.wait_for("task-succeeded", uuid=marks[-1].job_id, timeout=10)
        time.sleep(0.5)
    by_id: dict[str, list[Event]] = defaultdict(list)
    for event in list(log.events):
        if "uuid" in event:
            by_id[str(event["uuid"])].append(event)
    rows = [stages for m in marks if (stages := _job_stages(m, by_id[m.job_id])) is not None]
    if not rows:
        return {}
    return {
        name: round(statistics.median(row[i] for row in rows) * 1000, 3)
        for i, name in enumerate(STAGES)
    } | {"jobs": float(len(rows))}


def stage_table(medians: dict[str, float]) -> str:
    """The medians as a markdown table."""
    lines = ["| stage (median over the timed jobs) | ms |", "|---|---:|"]
    lines += [f"| {name} | {medians[name]:.2f} |" for name in STAGES if name in medians]
    total = sum(medians[name] for name in STAGES if name in medians)
    lines.append(f"| sum of the medians | {total:.2f} |")
    return "\n".join(lines)
