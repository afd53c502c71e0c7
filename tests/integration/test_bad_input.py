"""Bad input gets a clear error and loses nothing; the workers keep serving."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from kombu import Exchange, Producer

from agents.client import Client
from workers.deadletter import read_dead_letters
from workers.errors import InvalidJob, MalformedMessage, UnknownAgent
from workers.tiers import AGENT_TASK, Tier

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
