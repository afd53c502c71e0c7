"""Team members' results, kept out of the chord's join.

Celery's Redis chord join sends every header result in the callback's message, so 500 members
with long answers make one huge message (celery #7912, #5000). A member therefore parks its
full :class:`~agents.result.AgentResult` in Redis under its task id and returns a compact
reference: what the job tree and the aggregator's bookkeeping need, without the answer and the
routing decision. The team's tasks load the full results back when they need the answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from celery import Celery

from agents.result import AgentResult, TeamResult
from workers.errors import AgentFailed
from workers.redis_retry import retry_redis
from workers.settings import get_settings

MEMBER_PREFIX = "chordal:member:"
SUMMARY_FIELDS = (
    "status", "job_id", "agent", "model", "tier", "tokens_in", "tokens_out", "cost_usd",
    "latency_s",
)  # fmt: skip


def member_key(task_id: str) -> str:
    """Where a member's full result is parked."""
    return f"{MEMBER_PREFIX}{task_id}"


def park_member(app: Celery, result: AgentResult | TeamResult, *, ttl_s: int) -> dict[str, Any]:
    """Store ``result`` in full (its JSON form: redacted with ``store_redacted``, see
    :mod:`agents.result`); return the compact reference that goes through the join."""
    data = result.as_json() if isinstance(result, AgentResult) else result.model_dump(mode="json")
    encoded = json.dumps(data)
    retry_redis(
        lambda: app.backend.client.set(member_key(result.job_id), encoded, ex=ttl_s),
        budget_s=get_settings().redis_retry_s, what="parking a member's result",
    )  # fmt: skip
    return _reference(data)


def parked_member(app: Celery, task_id: str) -> dict[str, Any] | None:
    """The compact reference of a member that already parked its result, if one did."""
    raw = app.backend.client.get(member_key(task_id))
    return _reference(json.loads(raw)) if raw else None


def _reference(data: dict[str, Any]) -> dict[str, Any]:
    name = data.get("agent") or data.get("team")
    return {key: data[key] for key in SUMMARY_FIELDS if key in data} | {
        "agent": name,
        "parked": True,
    }


def load_members(app: Celery, members: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The members with every parked reference replaced by its full result."""
    parked = [m["job_id"] for m in members if m.get("parked")]
    stored = app.backend.client.mget([member_key(i) for i in parked]) if parked else []
    full = {i: json.loads(raw) for i, raw in zip(parked, stored, strict=True) if raw}
    missing = [i for i in parked if i not in full]
    if missing:
        raise AgentFailed(f"member results expired or lost: {', '.join(missing)}")
    return [full.get(m["job_id"], m) if m.get("parked") else m for m in members]
