"""A job pinned to a tier skips the router: the tier worker routes it, and `chordal explain`
still shows why it ran where."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery.result import AsyncResult

from agents import explain
from agents.client import Client
from chordal.lifecycle import stop_group
from chordal.stack import LocalStack
from tests.support import stack_settings
from workers.tiers import Tier

pytestmark = pytest.mark.integration


@pytest.fixture
def without_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack whose fast worker runs and whose router has been stopped."""
    settings = stack_settings(tmp_path_factory.mktemp("pinned"))
    with LocalStack(settings, tiers=[Tier.FAST]) as stack:
        stack.wait_until_consuming()
        router = next(child for child in stack.children if child.name == "router")
        stop_group(router.process)
        yield stack


@pytest.mark.timeout(180)
def test_a_pinned_job_runs_without_the_router(without_router: LocalStack) -> None:
    client = Client(settings=without_router.settings)
    try:
        # When: a job pinned to fast, and one the router would have to route
        pinned = client.submit({"agent": "summarizer", "input": "Pinned here.", "tier": "fast"})
        unpinned = client.submit({"agent": "summarizer", "input": "Needs the router."})
        result = client.wait(pinned, timeout=60)
        records = explain.read(client.app, pinned)
        unpinned_state = AsyncResult(unpinned, app=client.app).state
    finally:
        client.app.close()

    # Then: the pinned job ran on fast; its decision travelled without its candidates, which
    # the explain record keeps; the other job waits for a router
    assert result["tier"] == "fast"
    assert result["decision"]["model"] == result["model"]
    assert "candidates" not in result["decision"]
    assert [record["model"] for record in records] == [result["model"]]
    assert records[0]["candidates"][0]["model"] == result["model"]
    assert unpinned_state == "PENDING"
