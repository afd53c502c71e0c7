"""D2: SIGTERM a fast worker holding 200 calls.

Must show: 0 lost, the worker exits 0 within the shutdown grace. Calls still running when the
grace runs out are given back to the queue at once and finished by the other worker; what they
may have cost is charged as uncertain, never lost.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.drills.stacks import (
    drill_settings,
    fast_workers,
    held,
    slow_calls,
    submit_mix,
    two_fast_workers,
)
from tests.drills.support import assert_ledger_matches, measure
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.drill]

PLAIN, TEAMS = 140, 10
GRACE_S = 5.0
EXIT_MARGIN_S = 5.0


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = drill_settings(tmp_path_factory.mktemp("d2"), shutdown_grace_s=GRACE_S)
    with two_fast_workers(settings) as running:
        yield running


@pytest.mark.timeout(420)
def test_d2_sigterm_of_a_fast_worker_holding_calls(stack: LocalStack) -> None:
    client = Client(settings=stack.settings)
    simulator = SimulatorAdmin(stack.settings.simulator_url)
    try:
        # Given: the fast workers hold calls that would outlast the shutdown grace
        slow_calls(simulator, 30.0)
        started = time.monotonic()
        job_ids = submit_mix(client, plain=PLAIN, teams=TEAMS)
        wait_for(lambda: simulator.stats()["in_flight"] >= 180, timeout=90,
                 what="180 calls in flight")  # fmt: skip
        victim = max(fast_workers(stack), key=lambda child: held(stack, child))
        holding = held(stack, victim)
        slow_calls(simulator, 1.0)  # calls made from now on are quick

        # When: it is asked to stop, as Kubernetes does (SIGTERM to the process)
        os.kill(victim.process.pid, signal.SIGTERM)
        signalled = time.monotonic()
        code = victim.process.wait(timeout=GRACE_S + 60)
        exit_s = time.monotonic() - signalled
        stack.children.remove(victim)

        # Then: it exited 0 within the grace, and every job still ends once
        counts = measure("D2 SIGTERM a fast worker", client, simulator, job_ids,
                         started=started, timeout=120)  # fmt: skip
        counts.extra.update(victim_held=holding, exit_code=code, exit_s=round(exit_s, 1))
    finally:
        client.app.close()

    assert holding >= 50
    assert code == 0
    assert exit_s <= GRACE_S + EXIT_MARGIN_S
    assert counts.lost == 0
    assert counts.states == {"SUCCESS": len(job_ids)}
    assert counts.duplicate_calls == 0
    assert_ledger_matches(counts)
