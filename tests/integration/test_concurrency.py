"""One tier worker process holds hundreds of LLM calls in flight at once."""

from __future__ import annotations

import pytest

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from tests.support import LATENCY_SCALE

pytestmark = pytest.mark.integration

IN_FLIGHT_TARGET = 200
JOBS = 240
CALL_SECONDS = 6.0


@pytest.mark.timeout(300)
def test_one_fast_worker_process_holds_200_calls_in_flight(
    client: Client, simulator: SimulatorAdmin, submit_and_wait
) -> None:
    # Given: the model simple fast jobs go to answers only after several seconds
    model = submit_and_wait(agent="summarizer", input="probe", tier="fast")["model"]
    simulator.fault(model, latency_median_s=CALL_SECONDS / LATENCY_SCALE, latency_sigma=0.0)
    simulator.reset_stats()

    # When: many such jobs are submitted at once (the stack runs ONE fast worker process)
    ids = [
        client.submit({"agent": "summarizer", "input": f"job {n}", "tier": "fast"})
        for n in range(JOBS)
    ]
    results = [client.wait(job_id, timeout=240) for job_id in ids]

    # Then: every job answered, and the provider saw at least 200 of them at the same time
    assert {r["model"] for r in results} == {model}
    stats = simulator.stats()["models"][model]
    assert stats["ok"] == JOBS
    assert stats["peak_in_flight"] >= IN_FLIGHT_TARGET
