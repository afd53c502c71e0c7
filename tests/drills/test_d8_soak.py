"""D8: soak -- 5,000 jobs over the three tiers with 30 % of calls failing, one tier worker killed
with SIGKILL and the broker restarted along the way.

Must show: every job terminal (a job whose every attempt failed ends FAILED, with its attempts),
0 lost, 0 duplicate provider calls, the ledger equal to what the results billed, in under ten
minutes on this machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.drills.stacks import drill_settings, sigkill, slow_calls
from tests.drills.support import assert_ledger_matches, measure
from workers.errors import BrokerUnavailable
from workers.tiers import QUALITY_TIERS, Tier

pytestmark = [pytest.mark.integration, pytest.mark.drill]

JOBS = 5_000
FAULT_RATE = 0.3
SOAK_LIMIT_S = 600.0


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = drill_settings(
        tmp_path_factory.mktemp("d8"),
        submit_timeout_s=2.0,
        # Faults are the point here: breakers that open on them would only add waits.
        breaker_min_calls=1_000_000,
    )
    with LocalStack(settings) as running:
        yield running


@pytest.mark.timeout(900)
def test_d8_soak(stack: LocalStack) -> None:
    assert stack.broker is not None
    client = Client(settings=stack.settings)
    simulator = SimulatorAdmin(stack.settings.simulator_url)
    accepted: list[str] = []
    refused = 0

    def submit_all() -> None:
        nonlocal refused
        for n in range(JOBS):
            tier = QUALITY_TIERS[n % len(QUALITY_TIERS)]
            job = {"agent": "summarizer", "input": f"Soak job {n}.", "tier": str(tier)}
            try:
                accepted.append(client.submit(job))
            except BrokerUnavailable:
                refused += 1

    try:
        # Given: 30 % of calls fail, and jobs arrive on every tier
        slow_calls(simulator, 0.3)
        simulator.fault("*", error_rate=FAULT_RATE)
        started = time.monotonic()
        producer = threading.Thread(target=submit_all)
        producer.start()

        # When: a tier worker is killed, then the broker
        while len(accepted) < JOBS // 3:
            time.sleep(0.1)
        victim = next(c for c in stack.children if c.name.startswith(Tier.BALANCED.value))
        sigkill(stack, victim)
        stack.add_worker(Tier.BALANCED)
        while len(accepted) < 2 * JOBS // 3:
            time.sleep(0.1)
        stack.broker.kill()
        time.sleep(2.0)
        stack.broker.start()
        producer.join()

        # Then: everything ends, once, and is billed once
        counts = measure("D8 soak", client, simulator, accepted, started=started,
                         timeout=SOAK_LIMIT_S)  # fmt: skip
        counts.extra.update(submitted=JOBS, refused_while_down=refused)
    finally:
        client.app.close()

    assert counts.accepted + refused == JOBS
    assert counts.lost == 0
    assert set(counts.states) <= {"SUCCESS", "FAILURE"}
    assert counts.duplicate_calls == 0
    assert counts.seconds < SOAK_LIMIT_S
    assert_ledger_matches(counts)
    stack.check_alive()
