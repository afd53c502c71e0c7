"""Client.submit: a job pinned to a provider tier goes straight to that tier's queue; anything
the router must see first goes to the router."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from agents.client import Client
from agents.job import goes_straight_to_its_tier, parse_job
from chordal.broker import EmbeddedBroker
from workers.settings import Settings
from workers.tiers import AGENT_TASK, ROUTE_TASK


def on_queue(store: redis.Redis, queue: str) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message on ``queue`` (kombu keeps a list per priority step)."""
    found = []
    for name in store.keys(f"{queue}*"):
        if store.type(name) != b"list":
            continue
        for raw in store.lrange(name, 0, -1):
            message = json.loads(raw)
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append((message["headers"]["task"], args))
    return found


def submitted(valkey: EmbeddedBroker, job: dict[str, Any], **settings: Any) -> None:
    client = Client(settings=Settings(broker_url=valkey.url, result_backend=valkey.url, **settings))
    try:
        client.submit(job)
    finally:
        client.app.close()


def test_a_job_pinned_to_a_tier_goes_to_that_tiers_queue_undecided(
    valkey: EmbeddedBroker, connect: Callable[[], redis.Redis]
) -> None:
    store = connect()

    submitted(valkey, {"agent": "summarizer", "input": "Pinned.", "tier": "balanced"})

    [(task, args)] = on_queue(store, "tier.balanced")
    assert task == AGENT_TASK
    assert args[0]["input"] == "Pinned."
    assert args[1:] == [None, []]
    assert on_queue(store, "router") == []


@pytest.mark.parametrize(
    "job",
    [
        {"agent": "summarizer", "input": "Unpinned."},
        {"agent": "summarizer", "input": "Classified first.", "tier": "fast",
         "complexity": "classify"},
        {"team": "research", "input": "A team.", "tier": "fast"},
    ],
    ids=["unpinned", "classify", "team"],
)  # fmt: skip
def test_what_the_router_must_see_first_goes_to_the_router(
    valkey: EmbeddedBroker, connect: Callable[[], redis.Redis], job: dict[str, Any]
) -> None:
    store = connect()

    submitted(valkey, job)

    assert [task for task, _ in on_queue(store, "router")] == [ROUTE_TASK]
    assert on_queue(store, "tier.fast") == []


def test_the_router_hop_can_be_kept(
    valkey: EmbeddedBroker, connect: Callable[[], redis.Redis]
) -> None:
    store = connect()

    submitted(valkey, {"agent": "summarizer", "input": "Pinned.", "tier": "fast"},
              pinned_skip_router=False)  # fmt: skip

    assert [task for task, _ in on_queue(store, "router")] == [ROUTE_TASK]
    assert on_queue(store, "tier.fast") == []


def test_the_local_tier_keeps_the_router() -> None:
    # The router fails a local job at once where the tier is off; its queue would hold it.
    assert not goes_straight_to_its_tier(parse_job({"agent": "summarizer", "input": "x",
                                                    "tier": "local"}))  # fmt: skip
    assert goes_straight_to_its_tier(parse_job({"agent": "summarizer", "input": "x",
                                                "tier": "premium"}))  # fmt: skip
