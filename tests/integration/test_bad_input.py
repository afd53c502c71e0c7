"""Bad input gets a clear error and loses nothing; the workers keep serving."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from kombu import Exchange, Producer

from agents.client import Client
from chordal.stack import LocalStack
from workers.deadletter import find_dead_letter, read_dead_letters
from workers.errors import InvalidJob, MalformedMessage, UnknownAgent
from workers.tiers import AGENT_TASK, ROUTE_TASK, ROUTER_QUEUE, Tier

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("job", "field", "message"),
    [
        ({"agent": "summarizer", "input": ""}, "input", "input must not be empty"),
        ({"agent": "summarizer", "input": "   "}, "input", "input must not be empty"),
        (
            {"agent": "summarizer", "input": "x", "max_cost_usd": -1},
            "max_cost_usd",
            "greater than 0",
        ),
        ({"agent": "summarizer", "input": "x", "max_cost_usd": "lots"}, "max_cost_usd", "number"),
        ({"agent": "summarizer", "input": "x", "max_cost_usd": True}, "max_cost_usd", "boolean"),
        ({"agent": "summarizer", "input": "x", "tier": "gold"}, "tier", "fast"),
        ({"agent": "summarizer", "input": "x", "priority": 12}, "priority", "less than or equal"),
        ({"agent": "summarizer", "input": "x", "surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_invalid_job_is_refused_before_enqueue_naming_the_field(
    client: Client, job: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidJob, match=message) as refused:
        client.submit(job)

    assert refused.value.field == field
    assert field in str(refused.value)


def test_unknown_agent_is_refused_listing_known_agents(client: Client) -> None:
    with pytest.raises(UnknownAgent, match=r"unknown agent 'astrologer'.*summarizer") as refused:
        client.submit({"agent": "astrologer", "input": "x"})

    assert refused.value.field == "agent"


def _publish_raw(client: Client, queue: str, body: bytes | str, **properties: Any) -> str:
    message_id = str(uuid.uuid4())
    with client.app.connection_for_write() as connection:
        producer = Producer(connection.channel(), exchange=Exchange(queue, type="direct"))
        producer.publish(body, routing_key=queue, serializer=None, declare=[], **properties)
    return message_id


def _dead_letter_matching(client: Client, needle: str, *, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in read_dead_letters(client.app, limit=200):
            if needle in json.dumps(record):
                return record
        time.sleep(0.1)
    raise AssertionError(f"no dead-letter record containing {needle!r}")


def test_body_that_is_not_json_goes_to_dead_letter(client: Client, submit_and_wait) -> None:
    marker = f"not-json-{uuid.uuid4()}"
    _publish_raw(
        client, Tier.FAST.queue, f"{{{marker}".encode(),
        content_type="application/json", content_encoding="utf-8",
        headers={"task": AGENT_TASK, "id": marker},
    )  # fmt: skip

    record = _dead_letter_matching(client, marker)

    assert record["queue"] == Tier.FAST.queue
    assert "cannot decode" in record["reason"]
    assert (
        submit_and_wait(agent="summarizer", input="still serving?", tier="fast")["tier"] == "fast"
    )


def test_pickle_content_type_is_refused_and_kept(client: Client) -> None:
    marker = f"pickled-{uuid.uuid4()}"
    _publish_raw(
        client, Tier.FAST.queue, marker.encode(),
        content_type="application/x-python-serialize", content_encoding="binary",
        headers={"task": AGENT_TASK, "id": marker},
    )  # fmt: skip

    record = _dead_letter_matching(client, marker)

    assert "application/x-python-serialize" in record["reason"]


def test_unknown_task_goes_to_dead_letter_and_fails_its_id(client: Client) -> None:
    task_id = str(uuid.uuid4())
    body = json.dumps([[{"agent": "summarizer", "input": "x"}], {}, {}])
    _publish_raw(
        client, Tier.FAST.queue, body,
        content_type="application/json", content_encoding="utf-8",
        headers={"task": "chordal.no_such_task", "id": task_id, "lang": "py"},
    )  # fmt: skip

    record = _dead_letter_matching(client, task_id)

    assert "unknown task" in record["reason"]
    assert record["task"] == "chordal.no_such_task"


def test_message_without_task_headers_goes_to_dead_letter(client: Client) -> None:
    marker = f"shapeless-{uuid.uuid4()}"
    _publish_raw(
        client, Tier.FAST.queue, json.dumps({"hello": marker}),
        content_type="application/json", content_encoding="utf-8",
    )  # fmt: skip

    record = _dead_letter_matching(client, marker)

    assert record["reason"] == "not a task message"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([1, 2, 3, 4], {}),  # wrong number of arguments
        (["a job?", {}], {"failed": []}),  # right count, wrong shape
        ([{"agent": "summarizer"}, {}], {"failed": []}),  # job missing its input
    ],
)
def test_wrong_shape_for_agent_task_fails_clearly_and_is_kept(
    client: Client, args: list[Any], kwargs: dict[str, Any]
) -> None:
    result = client.app.send_task(AGENT_TASK, args=args, kwargs=kwargs, queue=Tier.FAST.queue)

    with pytest.raises(MalformedMessage):
        result.get(timeout=30)
    record = _dead_letter_matching(client, result.id)
    assert record["task"] == AGENT_TASK
    assert record["body"]["args"] == args


def test_oversize_input_is_refused_at_submit_naming_the_field(client: Client) -> None:
    with pytest.raises(InvalidJob, match="input is over 1048576 bytes") as refused:
        client.submit({"agent": "summarizer", "input": "x" * (2 * 1024 * 1024)})

    assert refused.value.field == "input"


def test_oversize_input_sent_past_the_client_is_refused_by_the_router(client: Client) -> None:
    # A producer using send_task skips the client's checks: the router's own parse refuses it.
    job = {"agent": "summarizer", "input": "x" * (2 * 1024 * 1024)}
    result = client.app.send_task(ROUTE_TASK, args=[job], queue=ROUTER_QUEUE)

    with pytest.raises(MalformedMessage, match="input is over 1048576 bytes"):
        result.get(timeout=30)
    record = _dead_letter_matching(client, result.id)
    assert record["task"] == ROUTE_TASK
    assert "input is over" in record["reason"]


def _chordal(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chordal.cli", *args], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def test_a_dead_letter_is_listed_replayed_and_purged_from_the_cli(
    stack: LocalStack, client: Client
) -> None:
    # Given an undecodable message on the dead-letter list
    marker = f"replayed-{uuid.uuid4()}"
    _publish_raw(
        client, Tier.FAST.queue, f"{{{marker}".encode(),
        content_type="application/json", content_encoding="utf-8",
        headers={"task": AGENT_TASK, "id": marker},
    )  # fmt: skip
    first = _dead_letter_matching(client, marker)
    listed = _chordal("dead-letters", "--limit", "200", env=stack.env())
    assert listed.returncode == 0, listed.stderr
    assert first["id"] in {record["id"] for record in json.loads(listed.stdout)}

    # When it is replayed unchanged
    replayed = _chordal("dead-letters", "replay", first["id"], env=stack.env())

    # Then it is back in its queue, dead-lettered again under a new id, the old record gone
    assert replayed.returncode == 0, replayed.stderr
    assert f"{first['id']}: replayed to {Tier.FAST.queue}" in replayed.stdout
    deadline = time.monotonic() + 20
    again: list[dict[str, Any]] = []
    while not again and time.monotonic() < deadline:
        again = [r for r in read_dead_letters(client.app, limit=200) if marker in json.dumps(r)
                 and r["id"] != first["id"]]  # fmt: skip
        time.sleep(0.1)
    [second] = again
    assert "cannot decode" in second["reason"]
    assert find_dead_letter(client.app, first["id"]) is None

    # When it is purged, it is gone; purging it again says so
    purged = _chordal("dead-letters", "purge", second["id"], env=stack.env())
    assert purged.returncode == 0, purged.stderr
    assert find_dead_letter(client.app, second["id"]) is None
    missing = _chordal("dead-letters", "purge", second["id"], env=stack.env())
    assert missing.returncode == 1
    assert "no dead letter" in missing.stderr
    bare = _chordal("dead-letters", "purge", env=stack.env())
    assert bare.returncode == 2
