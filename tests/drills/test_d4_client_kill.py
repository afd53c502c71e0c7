"""D4: ``CLIENT KILL`` every worker connection while 100 calls are in flight.

kombu gives a dropped channel's unacknowledged messages back at once, while the threads pool
cannot stop the copies still running: each message is delivered a second time. Must show: 0
duplicate provider calls (the second copy finds the first one's lease and waits), 0 lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

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

PLAIN = 100


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(drill_settings(tmp_path_factory.mktemp("d4")), tiers=[Tier.FAST]) as running:
        yield running


@pytest.mark.timeout(300)
def test_d4_client_kill_of_every_connection_mid_call(stack: LocalStack) -> None:
    client = Client(settings=stack.settings)
    simulator = SimulatorAdmin(stack.settings.simulator_url)
    admin = redis.Redis.from_url(str(stack.settings.broker_url))
    try:
        # Given: 100 calls in flight on the fast worker
        slow_calls(simulator, 6.0)
        started = time.monotonic()
        job_ids = submit_mix(client, plain=PLAIN, teams=0)
        wait_for(lambda: simulator.stats()["in_flight"] >= 95, timeout=60,
                 what="95 calls in flight")  # fmt: skip

        # When: every client connection but this one is cut
        killed = int(admin.client_kill_filter(_type="normal", skipme=True))
        killed += int(admin.client_kill_filter(_type="pubsub", skipme=True))
        slow_calls(simulator, 0.5)

        # Then: every job ends, and no attempt was answered twice
        counts = measure("D4 CLIENT KILL mid-call", client, simulator, job_ids,
                         started=started, timeout=120)  # fmt: skip
        logs = "".join(child.log.read_text(errors="replace") for child in stack.children)
        deferred = logs.count("is running elsewhere: this copy waits")
        counts.extra.update(connections_killed=killed, copies_deferred=deferred)
    finally:
        admin.close()
        client.app.close()

    assert killed > 0
    # The drill means something only if messages really came back while their calls ran.
    assert deferred > 0
    assert counts.lost == 0
    assert counts.states == {"SUCCESS": len(job_ids)}
    assert counts.duplicate_calls == 0
    assert_ledger_matches(counts)
    stack.check_alive()
