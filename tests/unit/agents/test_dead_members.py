"""A dead-lettered message ends its job (``agents.dead_members``), against a real Valkey and
Celery's own chord join."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, chord

from agents.dead_members import end_dead_lettered, member_failure
from workers.tiers import ROUTE_TASK, ROUTER_QUEUE

BODY_QUEUE = "dead-members-body"


def _member(n: int) -> Any:
    job = {"agent": f"seat-{n}", "input": "x", "metadata": {"seat": n}}
    return ROUTE_TASK, (job,), {"member": True}


def _queued(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]


def _body(payload: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(payload["body"]))


def test_a_dead_lettered_member_joins_its_team_as_a_failed_member(
    app: Celery, connect: Callable[[], redis.Redis]
) -> None:
    client = connect()
    # Given: a two-member chord whose messages wait on the router queue
    members = [app.signature(name, args=a, kwargs=k) for name, a, k in map(_member, (0, 1))]
    chord(members)(app.signature("chordal.test-body", queue=BODY_QUEUE))
    first, second = _queued(client, ROUTER_QUEUE)
    assert client.llen(BODY_QUEUE) == 0

    # When: both are dead-lettered (as the heartbeat does once they came back too often)
    end_dead_lettered(app, first, "delivered 6 times")
    assert client.llen(BODY_QUEUE) == 0  # the chord still waits for the second
    end_dead_lettered(app, second, "delivered 6 times")

    # Then: the chord's callback was sent, with each member as a failed member, in seat order
    (callback,) = _queued(client, BODY_QUEUE)
    (joined,), _kwargs, _embed = _body(callback)
    assert [m["status"] for m in joined] == ["failed", "failed"]
    assert [m["agent"] for m in joined] == ["seat-0", "seat-1"]
    assert [m["metadata"] for m in joined] == [{"seat": 0}, {"seat": 1}]
    assert joined[0]["job_id"] == first["headers"]["id"]
    assert joined[0]["error"] == "dead-lettered: delivered 6 times"
    assert app.AsyncResult(first["headers"]["id"]).state == "SUCCESS"


def test_a_dead_lettered_job_ends_failed_with_the_reason(
    app: Celery, connect: Callable[[], redis.Redis]
) -> None:
    client = connect()
    # Given: a plain job's router message
    app.send_task(ROUTE_TASK, args=({"agent": "a", "input": "x"},), task_id="plain-1")
    (payload,) = _queued(client, ROUTER_QUEUE)

    # When: it is dead-lettered
    end_dead_lettered(app, payload, "delivered 6 times")

    # Then: the job ended FAILURE, saying why
    result = app.AsyncResult("plain-1")
    assert result.state == "FAILURE"
    assert "dead-lettered: delivered 6 times" in str(result.result)


def test_a_message_whose_body_is_not_a_task_still_ends_its_job(app: Celery) -> None:
    payload = {"headers": {"id": "garbled-1"}, "body": "bm90IGpzb24=",
               "properties": {"body_encoding": "base64"}}  # fmt: skip

    end_dead_lettered(app, payload, "not JSON")

    assert app.AsyncResult("garbled-1").state == "FAILURE"


def test_only_a_team_members_message_becomes_a_failed_member() -> None:
    job = {"agent": "critic", "input": "x", "metadata": {"seat": 2}}

    failure = member_failure("m-1", [job, {}], {"member": True}, "dead-lettered: why")

    assert failure is not None
    assert (failure["status"], failure["agent"], failure["metadata"]) == ("failed", "critic",
                                                                          {"seat": 2})  # fmt: skip
    assert failure["error"] == "dead-lettered: why"
    assert member_failure("j-1", [job], {"member": False}, "why") is None
    assert member_failure("j-2", [job], {}, "why") is None
    # A member whose arguments are garbage still fills its seat.
    garbled = member_failure("m-2", "not a list", {"member": True}, "malformed")
    assert garbled is not None
    assert garbled["agent"] == "unknown"
