"""A tier worker on the loop pool holds its calls in flight without a thread each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.support import LATENCY_SCALE, stack_settings, wait_for
from workers.tiers import Tier

pytestmark = pytest.mark.integration

IN_FLIGHT = 120
CALL_S = 4.0


@pytest.fixture
def fast_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = stack_settings(tmp_path_factory.mktemp("loop-pool"), tier_concurrency=200)
    with LocalStack(settings, tiers=[Tier.FAST]) as stack:
        stack.wait_until_consuming()
        yield stack


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads")))


@pytest.mark.timeout(300)
def test_calls_in_flight_take_no_thread_each(fast_stack: LocalStack) -> None:
    # Given: a fast worker, and the simulator answering every call after CALL_S
    worker = next(child for child in fast_stack.children if child.name.startswith("fast"))
    pid = worker.process.pid
    idle_threads = _threads(pid)
    simulator = SimulatorAdmin(str(fast_stack.settings.simulator_url))
    simulator.fault("*", latency_median_s=CALL_S / LATENCY_SCALE, latency_sigma=0.0)
    client = Client(settings=fast_stack.settings)
    try:
        # When: IN_FLIGHT jobs are all waiting for their answers at once
        jobs = [
            client.submit({"agent": "summarizer", "input": f"Loop job {n}.", "tier": "fast"})
            for n in range(IN_FLIGHT)
        ]
        wait_for(lambda: simulator.stats()["in_flight"] >= IN_FLIGHT, timeout=120,
                 what=f"{IN_FLIGHT} calls in flight")  # fmt: skip
        busy_threads = _threads(pid)
        results = [client.wait(job, timeout=120) for job in jobs]
    finally:
        client.app.close()

    # Then: every job answered, and the worker ran them on the threads it had when idle
    # (Celery's threads pool would have started one per call: IN_FLIGHT more)
    assert [result["tier"] for result in results] == ["fast"] * IN_FLIGHT
    assert busy_threads - idle_threads < 10, (idle_threads, busy_threads)
