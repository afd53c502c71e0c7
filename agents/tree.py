"""A team job's tree: which task ran which member, recorded as the canvas is built.

Celery knows a chord's member ids only inside the canvas; Chordal writes them to a Redis list
under the job's id, so ``chordal status`` can show every member's state while the team runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from celery import Celery

TREE_PREFIX = "chordal:tree:"


def tree_key(job_id: str) -> str:
    """The Redis list holding ``job_id``'s members."""
    return f"{TREE_PREFIX}{job_id}"


def record(app: Celery, job_id: str, entries: list[dict[str, Any]], *, ttl_s: int) -> None:
    """Append ``entries`` (task id, agent, phase, index, parent) to the job's tree; ``parent``
    is the task id of the team (the job's own, or a nested team's) the member belongs to."""
    if not entries:
        return
    key = tree_key(job_id)
    pipe = app.backend.client.pipeline()
    pipe.rpush(key, *(json.dumps(entry) for entry in entries))
    pipe.expire(key, ttl_s)
    pipe.execute()


@dataclass(frozen=True)
class Node:
    """One member of a team job and where it is."""

    task_id: str
    agent: str
    phase: str
    index: int
    state: str
    info: dict[str, Any]
    parent: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the member's model, tier, cost and latency once known."""
        keys = ("model", "tier", "cost_usd", "latency_s", "error_kind", "status")
        return {
            "task_id": self.task_id,
            "agent": self.agent,
            "phase": self.phase,
            "index": self.index,
            "state": self.state,
            "parent": self.parent,
            **{key: self.info[key] for key in keys if key in self.info},
        }


def read(app: Celery, job_id: str) -> list[Node]:
    """The job's members with their current state (empty for a single-agent job)."""
    entries = [json.loads(raw) for raw in app.backend.client.lrange(tree_key(job_id), 0, -1)]
    if not entries:
        return []
    backend = app.backend
    metas = backend.client.mget([backend.get_key_for_task(e["task_id"]) for e in entries])
    nodes = []
    for entry, raw in zip(entries, metas, strict=True):
        meta = backend.decode_result(raw) if raw else {"status": "PENDING", "result": None}
        info = meta.get("result")
        nodes.append(
            Node(
                task_id=entry["task_id"],
                agent=entry["agent"],
                phase=entry["phase"],
                index=entry["index"],
                state=str(meta["status"]),
                info=info if isinstance(info, dict) else {},
                parent=entry.get("parent"),
            )
        )
    return nodes
