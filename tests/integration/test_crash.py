"""A tier worker killed with SIGKILL while team members run: the job still completes once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from agents.client import Client
from tests.support import LATENCY_SCALE, stack_settings
from workers.simulator.admin import SimulatorAdmin
from workers.stack import LocalStack
from workers.tiers import Tier

pytestmark = pytest.mark.integration

# Unacknowledged messages come back after the visibility timeout: short here, so the test is.
VISIBILITY_S = 6.0
MEMBERS = 10


@pytest.fixture
def crash_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = stack_settings(
        tmp_path_factory.mktemp("crash"),
        visibility_timeout_s=VISIBILITY_S,
        task_time_limit_s=5,
        restore_interval_s=1,
    )
    with LocalStack(settings, tiers=[Tier.FAST]) as stack:
        yield stack


@pytest.mark.timeout(300)
def test_sigkill_of_a_tier_worker_mid_team_completes_the_job_once(
    crash_stack: LocalStack,
) -> None:
    client = Client(settings=crash_stack.settings)
    simulator = SimulatorAdmin(crash_stack.settings.simulator_url)
    model = client.wait(
        client.submit({"agent": "summarizer", "input": "probe", "tier": "fast"}), timeout=60
    )["model"]
    try:
        # Given: members that take 3 s each, all in flight on the one fast worker
        simulator.fault(model, latency_median_s=3.0 / LATENCY_SCALE, latency_sigma=0.0)
        text = "\n\n".join(f"Part {n}. " + "Chords join results. " * 12 for n in range(MEMBERS))
        job_id = client.submit({"team": "small-chunks", "input": text})
        _wait_for(lambda: simulator.stats()["models"].get(model, {}).get("in_flight", 0) >= 5)

        # When: that worker is killed outright, and a new one starts after the visibility timeout
        fast = next(c for c in crash_stack.children if c.name.startswith("fast"))
        os.killpg(fast.process.pid, signal.SIGKILL)
        fast.process.wait()
        crash_stack.children.remove(fast)
        simulator.fault(model, latency_median_s=0.7)
        time.sleep(VISIBILITY_S + 1)
        crash_stack.add_worker(Tier.FAST)
        crash_stack.wait_until_consuming()

        result = client.wait(job_id, timeout=120)
    finally:
        client.app.close()

    # Then: every member is in the result exactly once, and each succeeded
    assert [m["metadata"]["member"] for m in result["members"]] == list(range(MEMBERS))
    assert result["succeeded"] == MEMBERS
    assert len({m["job_id"] for m in result["members"]}) == MEMBERS


def _wait_for(condition, *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")
