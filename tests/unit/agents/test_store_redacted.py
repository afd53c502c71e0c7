"""CHORDAL_STORE_REDACTED: results, parked members, kept answers, dead letters and streamed
tokens keep only redacted text when it is on, and the text as it came when it is off."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from celery import Celery

from agents import answers, result, tokens
from agents.events import Events
from agents.members import load_members, member_key, park_member
from agents.result import AgentResult, Attempt, CascadeReport, MemberFailure, TeamResult
from agents.tokens import TokenEvents
from chordal.broker import EmbeddedBroker
from routing.decision import RoutingDecision
from routing.fleet import Fleet
from routing.llm import Completion
from tests.support import FLEET_CALL, FLEET_MODEL
from workers.deadletter import raw_body, read_dead_letters, record_dead_letter
from workers.settings import Settings, get_settings
from workers.tiers import Tier

ADDRESS = "alice@example.com"
TEXT = f"Write to {ADDRESS} or call +44 20 7946 0958."


@pytest.fixture(params=[True, False], ids=["redacted", "as-is"])
def redacted(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The setting, on and off, as the result models read it."""
    settings = get_settings().model_copy(update={"store_redacted": request.param})
    monkeypatch.setattr(result, "get_settings", lambda: settings)
    return bool(request.param)


def decision() -> RoutingDecision:
    return RoutingDecision(
        model="gpt-5-mini", tier=Tier.FAST, task_kind="general", complexity=0.4,
        prompt_tokens=12, max_output_tokens=256, expected_cost_usd=0.001, max_cost_usd=0.002,
        reason="best score",
    )  # fmt: skip


def agent_result(job_id: str = "job-1") -> AgentResult:
    return AgentResult(
        job_id=job_id, agent="researcher", tenant="acme", metadata={"contact": ADDRESS},
        output=TEXT, structured={"reply_to": ADDRESS, "items": [TEXT, 3]}, model="gpt-5-mini",
        tier=Tier.FAST, tokens_in=12, tokens_out=34, cost_usd=0.001, latency_s=0.5, attempts=2,
        failed_attempts=[Attempt(model="gpt-5", tier=Tier.FAST, error_kind="AgentFailed",
                                 error=f"provider rejected the request: {TEXT}")],
        decision=decision(),
        cascade=CascadeReport(first_model="a", strong_model="b", escalated=False,
                              reason=f"the critic quoted {ADDRESS}", cost_usd=0.001,
                              strong_only_usd=0.002, saved_usd=0.001),
    )  # fmt: skip


def failure(job_id: str = "job-2") -> MemberFailure:
    return MemberFailure(job_id=job_id, agent="critic", metadata={"contact": ADDRESS},
                         error_kind="AgentFailed", error=f"provider said: {TEXT}")  # fmt: skip


def team_result() -> TeamResult:
    return TeamResult(
        job_id="team-1", team="trio", pattern="ensemble", tenant="acme", output=TEXT,
        metadata={"contact": ADDRESS}, aggregator=agent_result("agg"),
        members=[agent_result("m1"), failure("m2")], succeeded=1, failed=1, cost_usd=0.002,
        tokens_in=24, tokens_out=68,
    )  # fmt: skip


def holds_only_redacted(text: str, redacted: bool) -> None:
    if redacted:
        assert ADDRESS not in text
        assert "7946" not in text
        assert "[EMAIL]" in text
        assert "[PHONE]" in text
    else:
        assert ADDRESS in text
        assert "[EMAIL]" not in text


def test_a_results_json_holds_redacted_text_when_on(redacted: bool) -> None:
    stored = agent_result().as_json()

    holds_only_redacted(json.dumps(stored), redacted)
    expected = "Write to [EMAIL] or call [PHONE]." if redacted else TEXT
    assert stored["output"] == expected
    assert stored["structured"]["items"] == [expected, 3]
    # What is not text is stored as it was.
    assert (stored["job_id"], stored["model"], stored["tokens_out"]) == ("job-1", "gpt-5-mini", 34)


def test_a_team_result_and_a_failed_member_hold_redacted_text_when_on(redacted: bool) -> None:
    holds_only_redacted(json.dumps(team_result().model_dump(mode="json")), redacted)
    holds_only_redacted(json.dumps(failure().model_dump(mode="json")), redacted)
    # In memory, the text is as it came: only what is stored is redacted.
    assert team_result().output == TEXT


def test_a_parked_member_holds_redacted_text_when_on(redacted: bool, app: Celery) -> None:
    parked = [park_member(app, agent_result("m1"), ttl_s=60),
              park_member(app, team_result(), ttl_s=60)]  # fmt: skip

    for task_id in ("m1", "team-1"):
        holds_only_redacted(app.backend.client.get(member_key(task_id)).decode(), redacted)
    # What the team's aggregator is given is what was parked: redacted when on.
    outputs = [member["output"] for member in load_members(app, parked)]
    assert all((ADDRESS not in output) is redacted for output in outputs)


def test_a_dead_letter_holds_redacted_text_when_on(
    redacted: bool, app: Celery, valkey: EmbeddedBroker
) -> None:
    settings = Settings(broker_url=valkey.url, store_redacted=redacted)
    body = json.dumps([[{"agent": "researcher", "input": TEXT}], {}, {}]).encode()
    record_dead_letter(app, reason=f"invalid task message: {TEXT}", queue="router",
                       body=body, headers={"argsrepr": repr(TEXT)}, settings=settings)  # fmt: skip
    record_dead_letter(app, reason="not a task", queue="router", body=b"\xff\xfe" + TEXT.encode(),
                       settings=settings)  # fmt: skip

    binary, kept = read_dead_letters(app, settings=settings)
    holds_only_redacted(json.dumps(kept), redacted)
    # A replay would send the (redacted) message as a valid JSON message.
    assert json.loads(raw_body(kept["body"]))[0][0]["agent"] == "researcher"
    assert (ADDRESS.encode() in raw_body(binary["body"])) is not redacted


def test_a_kept_answer_holds_redacted_text_when_on(
    redacted: bool, connect: Callable[[], redis.Redis], valkey: EmbeddedBroker
) -> None:
    fleet = Fleet(connect(), Settings(broker_url="redis://unused"))
    call: dict[str, Any] = FLEET_CALL
    admission = fleet.admit(FLEET_MODEL, tenant="acme", job_id="job-1", **call)
    done = Completion(content=TEXT, prompt_tokens=10, completion_tokens=5, cost_usd=0.0001,
                      latency_s=0.2, finish_reason="stop")  # fmt: skip

    async def keep() -> None:
        client = redis.asyncio.Redis.from_url(valkey.url)
        try:
            await answers.remember(client, "job-1:1", answers.Answer(done, admission), ttl_s=60,
                                   redacted=redacted)  # fmt: skip
        finally:
            await client.aclose()

    asyncio.run(keep())

    kept = answers.recall(fleet.client, "job-1:1")
    assert kept is not None
    holds_only_redacted(kept.completion.content, redacted)
    assert kept.admission == admission


def test_streamed_tokens_hold_redacted_text_when_on(
    redacted: bool,
    connect: Callable[[], redis.Redis],
    valkey: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An answer longer than what the redactor holds back, streamed in small pieces, each written
    # at once, that cut the address and the phone number in two.
    monkeypatch.setattr(tokens, "FLUSH_S", 0.0)
    answer = f"{'Some words before. ' * 20}{TEXT} {'And some words after. ' * 20}"
    pieces = [answer[i : i + 7] for i in range(0, len(answer), 7)]

    async def stream() -> int:
        client = redis.asyncio.Redis.from_url(valkey.url)
        sink = TokenEvents(client, "job-1", member=None, agent="researcher", maxlen=1000,
                           ttl_s=60, redacted=redacted)  # fmt: skip
        try:
            for piece in pieces:
                await sink.send(piece)
            await sink.close()
        finally:
            await client.aclose()
        return sink.sent

    sent = asyncio.run(stream())

    events = Events(connect(), maxlen=1000, ttl_s=60).read("job-1")
    texts = [event.data["text"] for event in events if event.kind == "token"]
    assert len(texts) == sent > 1  # still streamed, not held to the end
    holds_only_redacted("".join(texts), redacted)
    if redacted:
        assert not [text for text in texts if "alice" in text or "example.com" in text]
        assert "".join(texts) == answer.replace(ADDRESS, "[EMAIL]").replace(
            "+44 20 7946 0958", "[PHONE]"
        )


def test_a_failure_event_holds_a_redacted_error_when_on(
    redacted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents import job_events

    seen: list[dict[str, Any]] = []
    settings = get_settings().model_copy(update={"store_redacted": redacted})
    monkeypatch.setattr(job_events, "get_settings", lambda: settings)
    monkeypatch.setattr(job_events, "changed", lambda _task, _state, info: seen.append(info))

    job_events.failed(object(), RuntimeError(f"provider said: {TEXT}"))

    holds_only_redacted(seen[0]["error"], redacted)
