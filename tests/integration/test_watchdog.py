"""The watchdog settles jobs stuck past their deadline (real Valkey, no workers at all)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.client import Client
from chordal.broker import EmbeddedBroker
from workers.cancellation import is_cancelled
from workers.errors import DeadlineExceeded
from workers.settings import Settings
from workers.watchdog import sweep

pytestmark = pytest.mark.integration


@pytest.fixture
def lonely_client(tmp_path: Path) -> Iterator[Client]:
    """A producer whose broker has no worker: every job it submits is stuck."""
    with EmbeddedBroker(tmp_path) as broker:
        client = Client(settings=Settings(broker_url=broker.url, watchdog_grace_s=5))
        yield client
        client.app.close()


def test_job_unfinished_past_its_deadline_is_failed_and_cancelled(lonely_client: Client) -> None:
    # Given: a job due in 60 s that no worker will ever pick up
    deadline = time.time() + 60
    job_id = lonely_client.submit({"agent": "writer", "input": "x", "deadline_at": deadline})

    # When / Then: nothing is settled before the deadline plus grace, then the job is
    assert sweep(lonely_client.app, now=deadline + 4, ttl_s=60) == []
    assert sweep(lonely_client.app, now=deadline + 6, ttl_s=60) == [job_id]
    with pytest.raises(DeadlineExceeded, match="unfinished past its deadline"):
        lonely_client.wait(job_id, timeout=5)
    assert is_cancelled(lonely_client.app.backend.client, job_id)
    assert sweep(lonely_client.app, now=deadline + 7, ttl_s=60) == []


def test_finished_job_is_left_alone(lonely_client: Client) -> None:
    deadline = time.time() + 60
    job_id = lonely_client.submit({"agent": "writer", "input": "x", "deadline_at": deadline})
    lonely_client.app.backend.mark_as_done(job_id, {"output": "done in time"})

    assert sweep(lonely_client.app, now=deadline + 10, ttl_s=60) == []
    assert lonely_client.wait(job_id, timeout=5) == {"output": "done in time"}


@pytest.mark.timeout(180)
def test_workers_sweep_on_their_own_and_settle_a_stuck_job(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from chordal.stack import LocalStack
    from tests.support import stack_settings
    from workers.tiers import Tier

    # Given: running workers, but none for the premium tier the job is pinned to
    settings = stack_settings(
        tmp_path_factory.mktemp("watchdog"), watchdog_interval_s=1, watchdog_grace_s=1
    )
    with LocalStack(settings, tiers=[Tier.FAST]) as stack:
        client = Client(settings=stack.settings)
        try:
            # When: its deadline and the grace pass
            job_id = client.submit(
                {"agent": "writer", "input": "x", "tier": "premium", "deadline_at": time.time() + 2}
            )

            # Then: a worker's own watchdog loop fails and cancels it
            with pytest.raises(DeadlineExceeded, match="unfinished past its deadline"):
                client.wait(job_id, timeout=60)
            assert is_cancelled(client.app.backend.client, job_id)
        finally:
            client.app.close()
