"""Handing a task's id to its replacement (``workers.handoff``), against a real broker."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery, Task
from celery.exceptions import Ignore
from kombu import Queue

from workers.handoff import HANDED_OFF, hand_off, is_hand_off_success

QUEUE = "handoff-test"


def _host_task(app: Celery) -> Task:
    @app.task(name="tests.handoff.host", bind=True, shared=False)
    def host(self: Task) -> None:
        raise AssertionError("never run: the tests push its request by hand")

    return host


def _sent(app: Celery) -> list[dict[str, Any]]:
    # What reached the queue: each message's headers (task id, root, chord, nesting).
    with app.connection_for_write() as connection:
        bound = Queue(QUEUE, routing_key=QUEUE)(connection.default_channel)
        bound.declare()
        found = []
        while (message := bound.get()) is not None:
            found.append(dict(message.headers))
            message.ack()
    return found


def _signature(app: Celery) -> Any:
    return app.signature("tests.handoff.next", args=(1,), queue=QUEUE, routing_key=QUEUE)


def test_a_job_as_sent_is_handed_off_without_an_exception(app: Celery) -> None:
    task = _host_task(app)
    _sent(app)  # declares the queue
    task.push_request(id="job-1", root_id="job-1", is_eager=False)
    try:
        returned = hand_off(task, _signature(app))
        ignores_result = task.request.ignore_result
    finally:
        task.pop_request()

    assert returned == HANDED_OFF
    assert ignores_result is True  # the replacement stores the job's result, not this task
    [headers] = _sent(app)
    assert headers["id"] == "job-1"
    assert headers["root_id"] == "job-1"
    assert headers["replaced_task_nesting"] == 1


@pytest.mark.parametrize(
    "linked",
    [
        {"chord": {"task": "tests.handoff.join", "args": [], "kwargs": {}, "options": {}}},
        {"chain": [{"task": "tests.handoff.after", "args": [], "kwargs": {}, "options": {}}]},
        {"group": "group-1"},
    ],
)
def test_a_chord_chain_or_group_member_is_replaced_as_celery_does(
    app: Celery, linked: dict[str, Any]
) -> None:
    task = _host_task(app)
    _sent(app)
    task.push_request(id="member-1", root_id="root-1", is_eager=False, **linked)
    try:
        with pytest.raises(Ignore):
            hand_off(task, _signature(app))
    finally:
        task.pop_request()

    [headers] = _sent(app)
    assert headers["id"] == "member-1"
    assert headers["root_id"] == "root-1"


def test_only_a_hand_offs_success_event_is_recognised() -> None:
    assert is_hand_off_success("task-succeeded", {"result": repr(HANDED_OFF)})
    assert not is_hand_off_success("task-succeeded", {"result": repr({"output": "x"})})
    assert not is_hand_off_success("task-failed", {"result": repr(HANDED_OFF)})
