"""Kept answers and calls in flight (``agents.answers``), against a real Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio

from agents import answers
from chordal.broker import EmbeddedBroker
from routing.fleet import Admission, Fleet
from routing.llm import Completion
from tests.support import FLEET_CALL as CALL
from tests.support import FLEET_MODEL as MODEL
from workers.settings import Settings


@pytest.fixture
def fleet(connect: Callable[[], redis.Redis]) -> Fleet:
    return Fleet(connect(), Settings(broker_url="redis://unused", tenant_budgets_usd={"acme": 1}))


def admit(fleet: Fleet, job: str) -> Admission:
    return fleet.admit(MODEL, tenant="acme", job_id=job, **CALL)  # type: ignore[arg-type]


def completion() -> Completion:
    return Completion(content="kept", prompt_tokens=10, completion_tokens=5, cost_usd=0.0001,
                      latency_s=0.2, finish_reason="stop", headers={"x": "1"})  # fmt: skip


def ledger_today(fleet: Fleet) -> tuple[float, int]:
    rows = fleet.ledger.rows(since_day=datetime.now(UTC).date())
    return sum(row.cost_usd for row in rows), sum(row.uncertain for row in rows)


def keep(url: str, attempt: str, kept: answers.Answer, worker: str | None = None) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(url)
        try:
            await answers.remember(client, attempt, kept, ttl_s=60, worker=worker)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_kept_answer_comes_back_whole(fleet: Fleet, valkey: EmbeddedBroker) -> None:
    held = admit(fleet, "job-1")
    kept = answers.Answer(completion(), held)

    keep(valkey.url, "job-1:1", kept)

    assert answers.recall(fleet.client, "job-1:1") == kept
    assert answers.recall(fleet.client, "job-1:2") is None


def test_a_dead_workers_calls_are_charged_at_their_worst_case_once(
    fleet: Fleet, valkey: EmbeddedBroker
) -> None:
    # Given: a worker that admitted two calls, got the answer of one, and died
    lost, answered = admit(fleet, "job-2"), admit(fleet, "job-3")
    answers.admitted(fleet.client, "w1", "job-2:1", lost, ttl_s=60)
    answers.admitted(fleet.client, "w1", "job-3:1", answered, ttl_s=60)
    keep(valkey.url, "job-3:1", answers.Answer(completion(), answered), worker="w1")

    # When: live workers settle what it left, twice (two of them found it dead)
    first = answers.charge_lost_calls(fleet.client, fleet, "w1")
    answers.admitted(fleet.client, "w1", "job-2:1", lost, ttl_s=60)  # a stale copy of the list
    second = answers.charge_lost_calls(fleet.client, fleet, "w1")

    # Then: the call without an answer is charged its worst case, once, as uncertain; the
    # answered one is left to the copy that will return its answer
    assert (first, second) == (1, 1)
    spent, uncertain = ledger_today(fleet)
    assert uncertain == 1
    assert spent == pytest.approx(lost.reservation.amount_usd)
    assert fleet.budgets.usage(tenant="acme").spent_usd == pytest.approx(
        lost.reservation.amount_usd
    )
    assert not fleet.client.exists(answers.calls_key("w1"))


def test_a_call_that_ended_is_no_longer_in_flight(fleet: Fleet) -> None:
    held = admit(fleet, "job-4")
    answers.admitted(fleet.client, "w2", "job-4:1", held, ttl_s=60)
    assert answers.lost_calls(fleet.client, "w2") == [("job-4:1", held)]

    answers.finished(fleet.client, "w2", held)

    assert answers.lost_calls(fleet.client, "w2") == []
