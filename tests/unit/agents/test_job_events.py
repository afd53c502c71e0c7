from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agents import job_events
from workers.handoff import HANDED_OFF

JOB = {"agent": "summarizer", "input": "x"}


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def publish(self, job_id: str, kind: str, data: dict[str, Any]) -> str:
        self.seen.append((job_id, kind, data))
        return "1-0"


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorded = Recorder()
    monkeypatch.setattr(job_events, "events", lambda: recorded)
    return recorded


def task(task_id: str, root: str | None = None) -> Any:
    return SimpleNamespace(request=SimpleNamespace(id=task_id, root_id=root, args=[JOB]))


def test_the_jobs_own_task_records_its_state(recorder: Recorder) -> None:
    job_events.changed(task("j"), "ROUTED", {"model": "m", "tier": "fast", "other": 1})
    job_events.succeeded(task("j", "j"), {"model": "m", "cost_usd": 0.5, "output": "..."})

    assert recorder.seen == [
        ("j", "state", {"state": "ROUTED", "model": "m", "tier": "fast"}),
        ("j", "state", {"state": "SUCCESS", "model": "m", "cost_usd": 0.5}),
    ]


def test_a_member_records_under_its_job_tagged_with_itself(recorder: Recorder) -> None:
    job_events.succeeded(task("m1", "j"), {"status": "failed", "error": "boom"})
    job_events.failed(task("m2", "j"), ValueError("bad"))

    assert recorder.seen == [
        ("j", "member", {"member": "m1", "agent": "summarizer", "state": "FAILURE",
                         "error": "boom"}),
        ("j", "member", {"member": "m2", "agent": "summarizer", "state": "FAILURE",
                         "error": "bad", "error_type": "ValueError"}),
    ]  # fmt: skip


def test_a_hand_off_records_nothing_its_successor_ends_the_job(recorder: Recorder) -> None:
    job_events.succeeded(task("j"), HANDED_OFF)
    assert recorder.seen == []


def test_events_can_be_turned_off(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = job_events.get_settings().model_copy(update={"job_events": False})
    monkeypatch.setattr(job_events, "get_settings", lambda: settings)
    job_events.changed(task("j"), "ROUTED", None)
    assert recorder.seen == []
