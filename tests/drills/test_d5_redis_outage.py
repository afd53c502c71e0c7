"""D5: Redis unavailable for 5 s while calls are in flight -- paused (``CLIENT PAUSE ALL``), and
stopped and started again.

Must show: every job terminal, and the ledger equal to what the results billed: an answer that
arrived while Redis was away is stored, and charged once, when it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.drills.stacks import drill_settings, slow_calls, submit_mix
from tests.drills.support import assert_ledger_matches, measure
from tests.support import wait_for
from workers.tiers import Tier

pytestmark = [pytest.mark.integration, pytest.mark.drill]

PLAIN, TEAMS = 60, 4
OUTAGE_S = 5.0


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(drill_settings(tmp_path_factory.mktemp("d5")), tiers=[Tier.FAST]) as running:
        yield running


def _pause(stack: LocalStack) -> None:
    admin = redis.Redis.from_url(str(stack.settings.broker_url))
    try:
        admin.execute_command("CLIENT", "PAUSE", int(OUTAGE_S * 1000), "ALL")
    finally:
        admin.close()


def _stop_start(stack: LocalStack) -> None:
    assert stack.broker is not None
    stack.broker.shut_down()
    time.sleep(OUTAGE_S)
    stack.broker.start()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("outage", [_pause, _stop_start], ids=["client-pause", "stop-start"])
def test_d5_redis_away_for_five_seconds_mid_call(
    stack: LocalStack, outage: Callable[[LocalStack], None]
) -> None:
    client = Client(settings=stack.settings)
    simulator = SimulatorAdmin(stack.settings.simulator_url)
    try:
        # Given: calls in flight that answer while Redis is away
        slow_calls(simulator, 3.0)
        started = time.monotonic()
        job_ids = submit_mix(client, plain=PLAIN, teams=TEAMS)
        wait_for(lambda: simulator.stats()["in_flight"] >= 50, timeout=60,
                 what="50 calls in flight")  # fmt: skip

        # When: Redis goes away for five seconds
        outage(stack)

        # Then: every job ends, and every answer is billed once
        name = f"D5 Redis away 5 s ({outage.__name__.strip('_').replace('_', '/')})"
        counts = measure(name, client, simulator, job_ids, started=started, timeout=150)
    finally:
        client.app.close()

    assert counts.lost == 0
    assert counts.terminal == len(job_ids)
    assert counts.states.get("SUCCESS", 0) == len(job_ids)
    assert counts.duplicate_calls == 0
    assert_ledger_matches(counts)
    stack.check_alive()
