"""Every routing decision of a job, kept so ``chordal explain JOB_ID`` can show why it ran where.

The router and each re-route append their :class:`~routing.decision.RoutingDecision` (model,
tier, every constraint's effect, the candidates' scores, live-state notes) to a Redis list under
the task id, for as long as results are kept. A failed job keeps its decisions too.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Celery

from routing.decision import RoutingDecision

EXPLAIN_PREFIX = "chordal:explain:"


def explain_key(task_id: str) -> str:
    """The Redis list of ``task_id``'s decisions."""
    return f"{EXPLAIN_PREFIX}{task_id}"


def record(app: Celery, task_id: str, decision: RoutingDecision, *, ttl_s: int) -> None:
    """Append ``decision`` to the task's record."""
    key = explain_key(task_id)
    pipe = app.backend.client.pipeline()
    pipe.rpush(key, decision.model_dump_json())
    pipe.expire(key, ttl_s)
    pipe.execute()


def read(app: Celery, task_id: str) -> list[dict[str, Any]]:
    """Every decision recorded for ``task_id``, first to last."""
    return [json.loads(raw) for raw in app.backend.client.lrange(explain_key(task_id), 0, -1)]


def first(app: Celery, task_id: str) -> RoutingDecision | None:
    """The first decision recorded for ``task_id`` (its first link's), if any."""
    raw = app.backend.client.lindex(explain_key(task_id), 0)
    return None if raw is None else RoutingDecision.model_validate_json(raw)
