"""D3: kill -9 the broker (Valkey, append-only file with ``appendfsync everysec``) and start it
again while 500 jobs are being submitted and run.

Must show: every submit the broker acknowledged ends in a terminal state, none is lost. A submit
made while the broker is down is refused with BrokerUnavailable (not accepted, so not counted).
The ``everysec`` window -- what the broker wrote in its last second but had not yet fsynced --
is lost only if the machine itself crashes: a killed *process* leaves its writes in the page
cache, and Valkey writes its append-only file before it replies (docs/reliability.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.drills.stacks import Producer, drill_settings, slow_calls
from tests.drills.support import assert_ledger_matches, measure
from workers.tiers import Tier

pytestmark = [pytest.mark.integration, pytest.mark.drill]

JOBS = 500
DOWN_S = 3.0


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = drill_settings(tmp_path_factory.mktemp("d3"), submit_timeout_s=2.0)
    with LocalStack(settings, tiers=[Tier.FAST]) as running:
        yield running


@pytest.mark.timeout(420)
def test_d3_broker_killed_and_restarted_under_load(stack: LocalStack) -> None:
    assert stack.broker is not None
    client = Client(settings=stack.settings)
    simulator = SimulatorAdmin(stack.settings.simulator_url)
    producer = Producer(
        client, lambda n: {"agent": "summarizer", "input": f"Drill job {n}: keep it.",
                           "tier": "fast"},
        JOBS, pause_s=0.01,
    )  # fmt: skip
    try:
        # Given: jobs being submitted and run
        slow_calls(simulator, 0.5)
        started = time.monotonic()
        producer.start().wait_accepted(JOBS // 3)

        # When: the broker is killed outright, and started again from its append-only file
        stack.broker.kill()
        time.sleep(DOWN_S)
        stack.broker.start()
        producer.join()

        # Then: every acknowledged submit ends
        counts = measure("D3 broker kill -9 and restart", client, simulator, producer.accepted,
                         started=started, timeout=240)  # fmt: skip
        counts.extra.update(submitted=JOBS, refused_while_down=producer.refused)
    finally:
        client.app.close()

    assert counts.accepted + producer.refused == JOBS
    assert counts.lost == 0
    assert counts.states == {"SUCCESS": counts.accepted}
    assert counts.duplicate_calls == 0
    assert_ledger_matches(counts)
    stack.check_alive()
