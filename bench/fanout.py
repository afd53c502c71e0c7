"""Row d: how long a team's aggregator waits after its slowest member finished.

A real map_reduce team job (summarizer over 300-character chunks, one member per chunk) runs on
the local stack with a zero-latency simulator, at each size. For every job:

* *slowest member's end*: the latest ``date_done`` among the members' results. A member's result
  is stored by its agent task right before that task adds it to the chord's join, so the gap
  below includes the join itself (Redis counter, reading every member's reference, sending the
  callback).
* *callback start*: the ``task-started`` event of the chord's callback (``chordal.team.aggregate``,
  which carries the team's task id: the job's), on the router worker.
* *aggregator call start*: the ``task-started`` event of the aggregator's agent task (its id is
  the job tree's ``aggregator`` entry), on a tier worker -- the moment its LLM call begins, after
  the callback loaded the members' answers, routed the aggregator and handed it to a tier.

Worker event timestamps and result ``date_done`` come from the same clock (one machine). The
target (≤ 1 s at 100 members) is checked against the aggregator call start, the later of the two.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from celery import Celery
from celery.result import AsyncResult

from bench.events import EventLog
from bench.procs import BenchError
from bench.suite_report import Part
from chordal.stack import LocalStack

if TYPE_CHECKING:
    from agents.client import Client

TEAM = "bench-fanout"
CHUNK_CHARS = 300
TARGET_S = 1.0
TARGET_MEMBERS = 100


def write_team(path: Path) -> Path:
    """An agents file with the fan-out team (tests/integration/teams.yaml ``small-chunks``)."""
    team = {
        "name": TEAM,
        "description": "map_reduce with small chunks: one member per 300-character paragraph.",
        "pattern": "map_reduce",
        "mapper": "summarizer",
        "chunk_chars": CHUNK_CHARS,
        "aggregator": "summarizer",
    }
    path.write_text(yaml.safe_dump({"teams": [team]}))
    return path


def team_input(members: int) -> str:
    """A text that splits into exactly ``members`` chunks."""
    from agents.team import split_chunks

    text = "\n\n".join(
        f"Part {n:03d}. " + "Chords join many results. " * 10 for n in range(members)
    )
    chunks = len(split_chunks(text, size=CHUNK_CHARS))
    if chunks != members:
        raise BenchError(f"fan-out input makes {chunks} chunks, not {members}")
    return text


def _done_at(app: Celery, task_ids: Sequence[str]) -> list[float]:
    backend = app.backend
    raws = backend.client.mget([backend.get_key_for_task(task_id) for task_id in task_ids])
    missing = [task_id for task_id, raw in zip(task_ids, raws, strict=True) if not raw]
    if missing:
        raise BenchError(f"{len(missing)} member results missing, e.g. {missing[0]}")
    return [datetime.fromisoformat(backend.decode_result(raw)["date_done"]).timestamp()
            for raw in raws]  # fmt: skip


def measure_job(
    client: Client, events: EventLog, members: int, *, timeout: float
) -> dict[str, Any]:
    """Run one team job of ``members`` members; its timings in seconds."""
    from agents import tree
    from workers.tiers import AGENT_TASK, TEAM_AGGREGATE_TASK

    app = client.app
    submitted = time.time()
    job_id = client.submit({"team": TEAM, "input": team_input(members)})
    result = AsyncResult(job_id, app=app).get(timeout=timeout)
    finished = time.time()
    if result.get("succeeded") != members:
        raise BenchError(f"{members}-member job: {result.get('succeeded')} members succeeded")
    nodes = tree.read(app, job_id)
    mapped = [node.task_id for node in nodes if node.phase == "map"]
    (aggregator,) = [node.task_id for node in nodes if node.phase == "aggregator"]
    slowest_end = max(_done_at(app, mapped))
    # The chord's callback carries the team's task id: for a top-level team, the job's.
    callback_start = events.started(job_id, name=TEAM_AGGREGATE_TASK)
    aggregator_start = events.started(aggregator, name=AGENT_TASK)
    member_ids = set(mapped)
    first_member = min(
        float(e["timestamp"]) for e in events.matching("task-started") if e["uuid"] in member_ids
    )
    return {
        "members": members,
        "job_s": round(finished - submitted, 3),
        "members_span_s": round(slowest_end - first_member, 3),
        "to_callback_s": round(callback_start - slowest_end, 4),
        "to_aggregator_call_s": round(aggregator_start - slowest_end, 4),
    }


def run_fanout(stack: LocalStack, sizes: Sequence[int]) -> Part:
    """Row d at every size in ``sizes``, one job each, smallest first."""
    from agents.client import Client

    client = Client(settings=stack.settings)
    runs = []
    try:
        with EventLog(client.app) as events:
            for members in sorted(sizes):
                runs.append(measure_job(client, events, members, timeout=60 + members * 0.5))
    finally:
        client.app.close()
    part = Part("d", "Chord fan-out: slowest member's end to the aggregator's start")
    at_target = [run for run in runs if run["members"] == TARGET_MEMBERS]
    for run in runs:
        gap = run["to_aggregator_call_s"]
        checked = run["members"] == TARGET_MEMBERS
        part.add(
            f"{run['members']} members: to aggregator call start", gap, "s",
            compared=f"callback started after {run['to_callback_s']:.3f} s",
            target=f"≤ {TARGET_S:.0f} s" if checked else "",
            met=gap <= TARGET_S if checked else None,
        )  # fmt: skip
    if not at_target:
        part.notes.append(f"{TARGET_MEMBERS} members not run: no verdict")
    part.details = {"runs": runs, "team": TEAM, "chunk_chars": CHUNK_CHARS}
    part.table = _table(runs)
    part.notes += [
        "member end = latest result date_done (stored just before the member joins the chord); "
        "callback / aggregator call start = task-started events of chordal.team.aggregate and "
        "of the aggregator's agent task; one clock (one machine)",
        "members span = first member's router start to the slowest member's end: the fan-out "
        "itself, for scale",
    ]
    return part


def _table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| members | job s | members span s | end → callback start s | end → aggregator call s |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['members']} | {r['job_s']:.2f} | {r['members_span_s']:.2f} | "
        f"{r['to_callback_s']:.3f} | {r['to_aggregator_call_s']:.3f} |"
        for r in runs
    ]
    return "\n".join(lines)
