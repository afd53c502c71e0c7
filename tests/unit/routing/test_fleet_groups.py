"""The fleet's state per deployment of a model group, with the real Lua scripts on Valkey."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import redis

from routing.catalog import Catalog, Model
from routing.fleet import Admission, Fleet
from routing.scoring import RouteRequest, choose
from tests.support import FLEET_CALL as CALL
from tests.support import FLEET_MODEL
from workers.errors import ProviderUnavailable, RateLimited
from workers.settings import Settings

RPM = 3
EAST = replace(FLEET_MODEL, name="g", deployment_id="east", rpm=RPM)
WEST = replace(FLEET_MODEL, name="g", deployment_id="west", rpm=RPM)
LONE = replace(FLEET_MODEL, name="lone", deployment_id="lone", rpm=None)


def settings(**fields: object) -> Settings:
    return Settings(broker_url="redis://unused", breaker_min_calls=2, breaker_open_s=30, **fields)  # type: ignore[arg-type]


@pytest.fixture
def fleets(connect: Callable[[], redis.Redis]) -> list[Fleet]:
    """Four workers' fleets: each its own client of the one server."""
    return [Fleet(connect(), settings()) for _ in range(4)]


def admit(fleet: Fleet, model: Model, job: str = "job") -> Admission:
    return fleet.admit(model, tenant="acme", job_id=job, **CALL)  # type: ignore[arg-type]


def test_rpm_per_deployment_holds_fleet_wide_under_racing_workers(fleets: list[Fleet]) -> None:
    # When: 24 threads over four workers race for east at once
    granted, refused = [], []
    lock, start = threading.Lock(), threading.Barrier(24)

    def run(i: int) -> None:
        start.wait()
        try:
            held = admit(fleets[i % 4], EAST, job=f"j{i}")
        except RateLimited:
            with lock:
                refused.append(i)
        else:
            with lock:
                granted.append(held)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    # Then: exactly east's rpm got through, fleet-wide, under east's own key
    assert (len(granted), len(refused)) == (RPM, 24 - RPM)
    assert {held.key for held in granted} == {"east"}
    assert fleets[0].limits.headroom("east", rpm=RPM, tpm=None)["requests"] == 0
    # and west, the same model's other deployment, still has its own whole limit
    assert fleets[1].limits.headroom("west", rpm=RPM, tpm=None)["requests"] == RPM
    for i in range(RPM):
        admit(fleets[i], WEST, job=f"w{i}")
    with pytest.raises(RateLimited, match="west is at its fleet-wide rpm limit"):
        admit(fleets[3], WEST, job="w-last")


def test_a_failing_deployment_opens_only_its_own_breaker(fleets: list[Fleet]) -> None:
    fleet = fleets[0]
    # When: east fails twice (min_calls 2) while west answers
    for job in ("a", "b"):
        held = admit(fleet, replace(EAST, rpm=None), job=job)
        fleet.failed(held, ProviderUnavailable("503"), latency_s=0.1)
        fleet.succeeded(
            admit(fleet, replace(WEST, rpm=None), job=job),
            latency_s=0.1, tokens_in=10, tokens_out=5, cost_usd=0.0001,
        )  # fmt: skip

    # Then: east's breaker is open, west's and the model's name are untouched
    assert fleet.breakers.state("east").state == "open"
    assert fleet.breakers.state("west").state == "closed"
    assert not fleet.client.exists("chordal:breaker:g")
    # and the router, reading the fleet, sends the model's jobs to west
    models = (EAST, WEST, LONE)
    live = fleet.live_state(models, tenant="acme", job_id="j", job_budget_usd=None)
    assert set(live.open_breakers) == {"east"}
    request = RouteRequest(prompt_tokens=100, max_output_tokens=100, expected_output_tokens=50,
                           complexity=0.5, live=live)  # fmt: skip
    catalog = Catalog(models=models, profile="offline")
    assert {choose(request, catalog).deployment for _ in range(50)} <= {"west", "lone"}


def test_live_state_reads_headroom_of_grouped_deployments_only(fleets: list[Fleet]) -> None:
    fleet = fleets[0]
    admit(fleet, EAST)
    live = fleet.live_state(
        (EAST, WEST, replace(LONE, rpm=5)), tenant="acme", job_id="j", job_budget_usd=None
    )
    assert {key: room["requests"] for key, room in live.headroom.items()} == {
        "east": RPM - 1, "west": RPM,
    }  # fmt: skip
    assert live.in_flight == {}  # counted only under least-busy


def test_least_busy_counts_calls_in_flight_per_deployment(
    connect: Callable[[], redis.Redis],
) -> None:
    fleet = Fleet(connect(), settings(deployment_strategy="least-busy"))
    models = (replace(EAST, rpm=None), replace(WEST, rpm=None))

    def in_flight() -> dict[str, int]:
        live = fleet.live_state(models, tenant="acme", job_id="j", job_budget_usd=None)
        assert live.strategy == "least-busy"
        return dict(live.in_flight)

    first, second = admit(fleet, models[0], "a"), admit(fleet, models[0], "b")
    third = admit(fleet, models[1], "c")
    assert in_flight() == {"east": 2, "west": 1}

    fleet.succeeded(first, latency_s=0.1, tokens_in=1, tokens_out=1, cost_usd=0.0)
    fleet.failed(third, ProviderUnavailable("503"), latency_s=0.1)
    assert in_flight() == {"east": 1, "west": 0}
    fleet.abandoned(second)
    assert in_flight() == {"east": 0, "west": 0}


def test_the_ledger_counts_each_deployment_and_a_lone_model_as_before(
    fleets: list[Fleet],
) -> None:
    fleet = fleets[0]
    for model in (EAST, WEST, WEST, LONE):
        fleet.succeeded(
            admit(fleet, model), latency_s=0.2, tokens_in=10, tokens_out=5, cost_usd=0.001
        )

    rows = fleet.ledger.rows(since_day=datetime.now(UTC).date())
    assert [(row.model, row.deployment, row.requests) for row in rows] == [
        ("g", "east", 1), ("g", "west", 2), ("lone", "", 1),
    ]  # fmt: skip
    fields = fleet.client.hkeys(fleet.ledger.key(datetime.now(UTC).date()))
    assert b'["acme","lone","","fast","requests"]' in fields
