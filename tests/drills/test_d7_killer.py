"""D7, last case: a message that kills every worker that takes it.

Each time the job's call starts, the drill SIGKILLs the fast worker holding it and starts a new
one, as a message that crashes its worker would. A live worker gives the dead one's messages
back, counting each delivery (``chordal_deliveries``); the one that would be delivered past
``CHORDAL_MAX_DELIVERIES`` goes to the dead-letter list instead, the job ends FAILED with the
reason, and the job after it runs as usual. Replaying the record sends the message as it came.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery.result import AsyncResult

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.drills.stacks import drill_settings, fast_workers, sigkill, slow_calls
from tests.drills.support import DrillCounts, report
from tests.support import wait_for
from workers.deadletter import read_dead_letters, replay_dead_letter
from workers.tiers import Tier

pytestmark = [pytest.mark.integration, pytest.mark.drill]

MAX_DELIVERIES = 3


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = drill_settings(
        tmp_path_factory.mktemp("d7k"),
        max_deliveries=MAX_DELIVERIES,
        heartbeat_interval_s=1.0,
        worker_dead_after_s=4.0,
    )
    with LocalStack(settings, tiers=[Tier.FAST]) as running:
        yield running


@pytest.mark.timeout(400)
def test_d7_a_message_that_kills_its_worker_is_dead_lettered(stack: LocalStack) -> None:
    client = Client(settings=stack.settings)
    simulator = SimulatorAdmin(stack.settings.simulator_url)
    started = time.monotonic()
    try:
        # Given: a job whose call is slow enough to be caught in flight
        slow_calls(simulator, 30.0)
        killer = client.submit({"agent": "summarizer", "input": "Crash, please.", "tier": "fast"})

        # When: every worker that takes it dies, once the job's call has reached the provider
        kills = 0

        def called() -> int:
            return int(simulator.stats()["jobs"].get(killer, 0))

        def ended() -> bool:
            return AsyncResult(killer, app=client.app).state == "FAILURE"

        while not ended() and kills <= MAX_DELIVERIES:
            wait_for(lambda seen=kills: called() > seen or ended(), timeout=60,
                     what="the killer job called again, or given up")  # fmt: skip
            if ended():
                break
            (worker,) = fast_workers(stack)
            sigkill(stack, worker)
            kills += 1
            stack.add_worker(Tier.FAST)

        # Then: it is on the dead-letter list with its count, FAILED, and the next job runs
        result = AsyncResult(killer, app=client.app)
        state, error = result.state, str(result.info)
        records = [r for r in read_dead_letters(client.app) if r.get("task_id") == killer]
        slow_calls(simulator, 0.2)
        after = client.wait(
            client.submit({"agent": "summarizer", "input": "Business as usual.", "tier": "fast"}),
            timeout=60,
        )
        # ... and replaying it sends it back as it came, one delivery later
        replay_dead_letter(client.app, records[0]["id"])
        wait_for(lambda: simulator.stats()["jobs"].get(killer, 0) > kills, timeout=60,
                 what="the replayed job called again")  # fmt: skip
    finally:
        client.app.close()
    report(
        DrillCounts(
            drill="D7 poison: a message that kills its worker",
            accepted=2, terminal=2, lost=0, seconds=time.monotonic() - started,
            states={state: 1, "SUCCESS": 1},
            extra={"kills": kills, "dead_letters": len(records), "reason": records[0]["reason"]},
        )
    )  # fmt: skip

    assert kills == MAX_DELIVERIES
    assert state == "FAILURE"
    assert "dead-lettered" in error
    assert len(records) == 1
    assert f"delivered {MAX_DELIVERIES} times" in records[0]["reason"]
    assert after["agent"] == "summarizer"
    stack.check_alive()
