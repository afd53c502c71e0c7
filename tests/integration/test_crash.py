"""A tier worker killed with SIGKILL while team members run: the job still completes once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.support import LATENCY_SCALE, stack_report, stack_settings, wait_for
from workers.tiers import AGENT_TASK, Tier

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
        wait_for(
            lambda: simulator.stats()["models"].get(model, {}).get("in_flight", 0) >= 5,
            timeout=60,
        )

        # When: that worker is killed outright, and a new one starts after the visibility timeout
        fast = next(c for c in crash_stack.children if c.name.startswith("fast"))
        os.killpg(fast.process.pid, signal.SIGKILL)
        fast.process.wait()
        crash_stack.children.remove(fast)
        simulator.fault(model, latency_median_s=0.7)
        time.sleep(VISIBILITY_S + 1)
        crash_stack.add_worker(Tier.FAST)
        crash_stack.wait_until_consuming()

        try:
            result = client.wait(job_id, timeout=120)
        except TimeoutError as error:
            report = stack_report(crash_stack, client.app.backend.client)
            pytest.fail(f"{error}\n{report}")
        stats = simulator.stats()
    finally:
        client.app.close()

    # Then: every member is in the result exactly once, and each succeeded
    assert [m["metadata"]["member"] for m in result["members"]] == list(range(MEMBERS))
    assert result["succeeded"] == MEMBERS
    assert len({m["job_id"] for m in result["members"]}) == MEMBERS
    # Calls cut off by the kill were made again, but each member's answer was delivered (and
    # billed) once, and the result bills each member once.
    assert stats["jobs"][job_id] > MEMBERS + 1
    assert stats["answered"][job_id] == MEMBERS + 1
    billed = [*result["members"], result["aggregator"]]
    assert result["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in billed))


def test_member_delivered_again_returns_its_recorded_answer_without_a_call(
    client: Client, submit_and_wait, simulator: SimulatorAdmin
) -> None:
    # Given: a finished team, one of whose members' results is then lost from the backend
    result = submit_and_wait(team="trio", input="Answer once.")
    member = result["members"][0]
    client.app.backend.forget(member["job_id"])

    # When: a copy of that member's agent task arrives again (as after a redelivered router)
    job = {"agent": member["agent"], "input": "Answer once.", "tier": member["tier"]}
    copy = client.app.send_task(
        AGENT_TASK,
        args=(job, member["decision"]),
        kwargs={"failed": [], "member": True},
        task_id=member["job_id"],
        queue=Tier(member["tier"]).queue,
    )
    reference = copy.get(timeout=60)

    # Then: it answered from the recorded result, and the provider saw no call for it
    assert reference["parked"] is True
    assert reference["job_id"] == member["job_id"]
    assert reference["cost_usd"] == member["cost_usd"]
    assert member["job_id"] not in simulator.stats()["jobs"]
