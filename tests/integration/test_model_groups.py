"""A model group of two deployments on two simulator endpoints, against a real fleet.

The stack runs the ``cloud`` profile, so each deployment is called where its entry says: two
in-process simulators stand for two regions of one provider. A third model, on the first
simulator, is what a job would move to if failing over stayed out of the group.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from agents.client import Client
from chordal.simulator import SimConfig
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from routing.fleet import Fleet
from tests.integration.simulator_support import FAST, SimServer
from tests.support import stack_settings
from workers.tiers import Tier

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GROUP, OTHER = "gpt-4.1-mini", "gpt-4o"
JOB = {"agent": "summarizer", "input": "Two regions, one model: which answers?"}


def _entry(name: str, deployment: str, url: str, *, quality: float) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {"model": f"openai/{name}", "api_base": f"{url}/v1", "api_key": "sk-sim"},
        "model_info": {
            "id": deployment, "tier": "fast", "quality": quality, "expected_latency_s": 0.05,
            "base_model": name,
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def regions() -> Iterator[tuple[SimServer, SimServer]]:
    """Two simulators: the group's east and west endpoints."""
    east, west = (SimServer(SimConfig(default=FAST)).start() for _ in range(2))
    yield east, west
    east.stop()
    west.stop()


@pytest.fixture(scope="module")
def grouped(
    tmp_path_factory: pytest.TempPathFactory, regions: tuple[SimServer, SimServer]
) -> Iterator[LocalStack]:
    folder = tmp_path_factory.mktemp("groups")
    east, west = regions
    catalog = {
        "model_list": [
            _entry(GROUP, "east", east.url, quality=0.7),
            _entry(GROUP, "west", west.url, quality=0.7),
            # Dearer and weaker: chosen only once the group has nothing left.
            _entry(OTHER, "other", east.url, quality=0.5),
        ]
    }
    path = Path(folder / "catalog.yaml")
    path.write_text(yaml.safe_dump(catalog))
    settings = stack_settings(
        folder, profile="cloud", catalog_path=path, breaker_window_s=10.0, breaker_min_calls=4,
        breaker_open_s=60.0, breaker_max_open_s=60.0, route_cache_s=0.1, max_attempts=3,
    )  # fmt: skip
    with LocalStack(settings, tiers=(Tier.FAST,)) as stack:
        yield stack


@pytest.fixture
def client(grouped: LocalStack) -> Iterator[Client]:
    producer = Client(settings=grouped.settings)
    yield producer
    producer.app.close()


@pytest.fixture
def admins(grouped: LocalStack, regions: tuple[SimServer, SimServer]) -> Iterator[Any]:
    """Both simulators' admin APIs, and a fleet with no memory of earlier tests."""
    both = tuple(SimulatorAdmin(server.url) for server in regions)
    _forget(grouped, both)
    yield both
    _forget(grouped, both)


def _forget(stack: LocalStack, admins: tuple[SimulatorAdmin, ...]) -> None:
    for admin in admins:
        admin.reset()
    with redis.Redis.from_url(str(stack.settings.backend_url)) as client:
        for pattern in ("chordal:breaker:*", "chordal:limits*", "chordal:latency:*"):
            keys = list(client.scan_iter(pattern))
            if keys:
                client.delete(*keys)
    time.sleep(0.2)  # the router's cached readings lapse


def _run(client: Client, count: int, **job: Any) -> list[dict[str, Any]]:
    ids = [client.submit({**JOB, **job}) for _ in range(count)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda job_id: client.wait(job_id, timeout=90), ids))


def _answered(admin: SimulatorAdmin, model: str = GROUP) -> int:
    return int(admin.stats()["models"].get(model, {}).get("ok", 0))


def _chordal(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chordal.cli", *args], env=stack.env(), capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def test_traffic_spreads_across_both_deployments_of_the_group(
    client: Client, admins: tuple[SimulatorAdmin, SimulatorAdmin]
) -> None:
    east, west = admins
    # When: jobs arrive through the router, and pinned to the tier (routed by the tier worker)
    results = _run(client, 30) + _run(client, 10, tier="fast")

    # Then: every job ran on the group, and both deployments took a fair share
    assert {r["model"] for r in results} == {GROUP}
    spread = Counter(r["deployment"] for r in results)
    assert set(spread) == {"east", "west"}, spread
    assert min(spread.values()) >= 8, spread
    # as each simulator saw it: one call per job, none of them failed
    assert (_answered(east), _answered(west)) == (spread["east"], spread["west"])
    assert not [r for r in results if r["failed_attempts"]]


def test_one_deployments_outage_opens_only_its_breaker_and_fails_over_within_the_group(
    client: Client, grouped: LocalStack, admins: tuple[SimulatorAdmin, SimulatorAdmin]
) -> None:
    east, west = admins
    fleet = Fleet.connect(grouped.settings)
    # Given: the east region is down (every call a 503)
    east.fault(GROUP, outage=True)

    # When: jobs keep coming
    results = _run(client, 30)

    # Then: every job succeeded on the group's west deployment, none moved to another model
    assert Counter((r["model"], r["deployment"]) for r in results) == {(GROUP, "west"): 30}
    failed = [a for r in results for a in r["failed_attempts"]]
    assert failed, "some jobs should have met east before its breaker opened"
    assert {(a["model"], a["deployment"], a["scope"]) for a in failed} == {
        (GROUP, "east", "deployment")
    }
    # and only east's breaker opened: west's and the other model's stayed closed
    # (a model with one deployment is keyed by its model_info.id where it has one: other)
    states = {key: fleet.breakers.state(key).state for key in ("east", "west", "other", GROUP)}
    assert states == {"east": "open", "west": "closed", "other": "closed", GROUP: "closed"}
    assert _answered(west) == 30
    assert _answered(east, OTHER) == 0
    # every call east got is an attempt a result lists; once its breaker opened, the jobs sent
    # there were refused before calling it
    assert int(east.stats()["models"][GROUP]["outages"]) == sum(a["called"] for a in failed)

    # and `chordal explain` shows the group and the deployments
    job_id = next(r["job_id"] for r in results if r["failed_attempts"])
    shown = _chordal(grouped, "explain", job_id)
    assert shown.returncode == 0, shown.stderr
    assert f"{GROUP} [east]" in shown.stdout
    assert f"{GROUP} [west]" in shown.stdout
    fleet.close()


def test_breaker_commands_take_a_model_or_one_deployment(
    grouped: LocalStack, admins: tuple[SimulatorAdmin, SimulatorAdmin]
) -> None:
    def listed() -> dict[str, str]:
        done = _chordal(grouped, "breaker", "list", "--json")
        assert done.returncode == 0, done.stderr
        return {row["deployment"]: row["state"] for row in json.loads(done.stdout)}

    assert listed() == {"east": "closed", "west": "closed", "other": "closed"}
    # One deployment by its id
    opened = _chordal(grouped, "breaker", "open", "west", "--seconds", "30")
    assert opened.returncode == 0, opened.stderr
    assert listed() == {"east": "closed", "west": "open", "other": "closed"}
    # The model: every deployment of it
    assert _chordal(grouped, "breaker", "open", GROUP).returncode == 0
    assert listed() == {"east": "open", "west": "open", "other": "closed"}
    closed = _chordal(grouped, "breaker", "close", GROUP)
    assert closed.returncode == 0, closed.stderr
    assert "east: breaker closed" in closed.stdout
    assert "west: breaker closed" in closed.stdout
    assert listed() == {"east": "closed", "west": "closed", "other": "closed"}
    unknown = _chordal(grouped, "breaker", "open", "north")
    assert unknown.returncode == 2
    # naming the models and the deployments of the group
    assert all(name in unknown.stderr for name in ("north", GROUP, OTHER, "east", "west"))
