"""Chaos: provider faults driven through the simulator's admin API against a real fleet.

One stack for the module (router plus a worker per tier: four worker processes, one Valkey),
with breaker windows, rate windows and budgets small enough to see them act within seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from routing.catalog import read_catalog
from routing.fleet import Fleet
from tests.support import LATENCY_SCALE, scaled_catalog, stack_settings
from workers.errors import BudgetExceeded, ChordalError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STORM_PROVIDER, STORM_RPM, RATE_WINDOW_S = "gemini", 8, 3.0
OPEN_S = 1.0
THRIFTY, THRIFTY_BUDGET = "thrifty", 0.05


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    folder = tmp_path_factory.mktemp("chaos")
    catalog = read_catalog(scaled_catalog(folder / "c.yaml", scale=1.0, limits={}))
    storm = {
        e.model_name: {"rpm": STORM_RPM}
        for e in catalog.model_list
        if _provider(e.litellm_params["model"]) == STORM_PROVIDER
    }
    settings = stack_settings(
        folder,
        # Catalog latencies scaled like the simulator's, so the router's seeds are true.
        catalog_path=scaled_catalog(folder / "catalog.yaml", scale=LATENCY_SCALE, limits=storm),
        sim_latency_scale=1.0,
        breaker_window_s=10.0,
        breaker_min_calls=4,
        breaker_open_s=OPEN_S,
        breaker_max_open_s=2.0,
        breaker_probe_lease_s=5.0,
        rate_window_s=RATE_WINDOW_S,
        latency_window=10,
        latency_min_samples=3,
        route_cache_s=0.1,
        tenant_budgets_usd={THRIFTY: THRIFTY_BUDGET},
        # With budgets in force, a tenant not listed has none unless a default is set.
        default_tenant_budget_usd=1_000.0,
        max_requeues=10,
    )
    with LocalStack(settings) as stack:
        yield stack


@pytest.fixture
def sim(chaos: LocalStack) -> Iterator[SimulatorAdmin]:
    """The simulator, and a fleet with no memory of earlier tests (breakers, limits, latency)."""
    admin = SimulatorAdmin(chaos.settings.simulator_url)
    admin.reset()
    _forget_fleet_state(chaos)
    yield admin
    admin.reset()
    _forget_fleet_state(chaos)


@pytest.fixture
def client(chaos: LocalStack) -> Iterator[Client]:
    producer = Client(settings=chaos.settings)
    yield producer
    producer.app.close()


@pytest.fixture
def fleet(chaos: LocalStack) -> Fleet:
    return Fleet.connect(chaos.settings)


def _forget_fleet_state(stack: LocalStack) -> None:
    with redis.Redis.from_url(str(stack.settings.backend_url)) as client:
        for pattern in ("chordal:breaker:*", "chordal:limits*", "chordal:latency:*"):
            keys = list(client.scan_iter(pattern))
            if keys:
                client.delete(*keys)
    time.sleep(0.2)  # let the router's cached readings lapse


def _models(
    stack: LocalStack, *, provider: str | None = None, tier: str | None = None
) -> dict[str, float]:
    """Catalog models (with their latency seed) of one provider or tier."""
    catalog = read_catalog(stack.settings.catalog_path)
    return {
        e.model_name: e.model_info.expected_latency_s
        for e in catalog.model_list
        if (provider is None or _provider(e.litellm_params["model"]) == provider)
        and (tier is None or e.model_info.tier == tier)
    }


def _provider(model: str) -> str:
    if "/" in model:
        return model.split("/", 1)[0]
    return "openai" if model.startswith("gpt") else "anthropic"


def _run_all(client: Client, jobs: list[dict[str, Any]], *, timeout: float = 90) -> list[Any]:
    """Submit every job at once; each job's result, or the ChordalError it ended with."""
    ids = [client.submit(job) for job in jobs]

    def outcome(job_id: str) -> Any:
        try:
            return client.wait(job_id, timeout=timeout)
        except ChordalError as error:
            return error

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(outcome, ids))


def _until(condition: Callable[[], bool], *, timeout: float, step: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        step()
    raise AssertionError("condition not met in time")


def test_random_failures_every_job_ends_and_successes_carry_their_attempts(
    client: Client, sim: SimulatorAdmin
) -> None:
    # Given: every model fails 30 % of its calls
    sim.fault("*", error_rate=0.3)

    # When
    outcomes = _run_all(client, [{"agent": "analyst", "input": f"Q{n}?"} for n in range(40)])

    # Then: every job ended (no TimeoutError); successes count their calls and failed attempts
    results = [o for o in outcomes if isinstance(o, dict)]
    assert all(isinstance(o, dict | ChordalError) for o in outcomes)
    assert len(results) >= 30
    for result in results:
        failed = result["failed_attempts"]
        assert result["attempts"] == 1 + sum(a["called"] for a in failed)
        # The provider only fails with 500s; the fleet may also refuse before calling: an open
        # breaker, or the storm provider's small fleet-wide rpm limit when jobs flow fast.
        assert {a["error_kind"] for a in failed} <= {"ProviderUnavailable", "CircuitOpen",
                                                     "RateLimited"}  # fmt: skip
        assert not any(a["called"] for a in failed if a["error_kind"] != "ProviderUnavailable")
    assert any(result["attempts"] > 1 for result in results)


def test_injected_latency_moves_the_estimates_and_the_traffic(
    chaos: LocalStack, client: Client, sim: SimulatorAdmin, fleet: Fleet
) -> None:
    job = {"agent": "analyst", "input": "Quick, please.", "tier": "balanced", "max_latency_s": 0.3}
    balanced = _models(chaos, tier="balanced")
    for model in balanced:
        sim.fault(model, latency_median_s=0.05, latency_sigma=0.0)
    favourite = client.wait(client.submit(job), timeout=30)["model"]

    # When: the router's favourite slows to 500 ms while the others answer in 50 ms
    sim.fault(favourite, latency_median_s=0.5, latency_sigma=0.0)
    outcomes = [client.wait(client.submit(job), timeout=30) for _ in range(12)]

    # Then: its live estimate followed, and the last jobs went to models that meet the limit
    time.sleep(0.2)  # past the board's cache
    estimate = fleet.latency.estimates(balanced)[favourite]
    assert estimate.source == "live"
    assert estimate.p95 >= 0.3
    last = [o["model"] for o in outcomes[-5:]]
    assert favourite not in last
    for model in set(last):
        assert fleet.latency.estimates(balanced)[model].p95 < 0.3


def test_429_storm_never_exceeds_the_providers_rpm_across_the_fleet(
    chaos: LocalStack, client: Client, sim: SimulatorAdmin
) -> None:
    # Given: the provider enforces its rpm over its window and answers everything with 429
    storm = list(_models(chaos, provider=STORM_PROVIDER))
    for model in storm:
        sim.fault(model, rpm=STORM_RPM, rate_window_s=RATE_WINDOW_S, rate_limit_rate=1.0,
                  retry_after_s=2)  # fmt: skip

    # When: 60 jobs across every tier arrive at once
    tiers = ["fast", "balanced", "premium"]
    jobs = [{"agent": "writer", "input": f"Note {n}", "tier": tiers[n % 3]} for n in range(60)]
    outcomes = _run_all(client, jobs)

    # Then: every job was served elsewhere, and no window saw more than the rpm arrive
    assert all(isinstance(o, dict) for o in outcomes), [
        o for o in outcomes if not isinstance(o, dict)
    ]
    stats = sim.stats(window_s=RATE_WINDOW_S)["models"]
    hit = [model for model in storm if stats.get(model, {}).get("requests", 0)]
    assert hit, "the storm provider never got a call"
    for model in hit:
        assert stats[model]["max_in_window"] <= STORM_RPM
    assert not {o["model"] for o in outcomes} & set(storm)


def test_full_outage_opens_breakers_probes_once_per_window_and_recovers(
    chaos: LocalStack, client: Client, sim: SimulatorAdmin, fleet: Fleet
) -> None:
    # Given: the provider of the balanced tier's favourite model goes down entirely
    job = {"agent": "analyst", "input": "Still there?", "tier": "balanced"}
    target = client.wait(client.submit(job), timeout=30)["model"]
    catalog = read_catalog(chaos.settings.catalog_path)
    provider = next(
        _provider(e.litellm_params["model"]) for e in catalog.model_list if e.model_name == target
    )
    down = list(_models(chaos, provider=provider))
    for model in down:
        sim.fault(model, outage=True)
    sim.reset_stats()

    def trickle() -> None:
        outcomes = _run_all(client, [job] * 4)
        assert all(isinstance(o, dict) for o in outcomes)  # served by another provider

    # When: jobs trickle in until the target's breaker opens
    _until(lambda: fleet.breakers.state(target).state != "closed", timeout=30, step=trickle)
    opened_after = sim.stats()["models"][target]["requests"]

    # Then: it opened within 10 calls fleet-wide, and from then on only probes reach it
    assert opened_after <= 10
    sim.reset_stats()
    for _ in range(6):
        trickle()
        time.sleep(0.3)
    probes = sim.stats(window_s=OPEN_S * 0.75)["models"].get(target, {})
    assert probes.get("max_in_window", 0) <= 1

    # When: the outage ends, the next probe succeeds and traffic returns
    for model in down:
        sim.fault(model, outage=False)
    served: list[str] = []
    _until(
        lambda: target in served,
        timeout=30,
        step=lambda: served.extend(r["model"] for r in _run_all(client, [job] * 2)),
    )
    assert fleet.breakers.state(target).state == "closed"


def test_tenant_budget_holds_under_100_concurrent_jobs(
    client: Client, sim: SimulatorAdmin, fleet: Fleet
) -> None:
    # Given: a tenant with $0.05 a day and jobs of about $0.005 each on a premium model
    text = "Weigh every option in this brief. " * 600
    jobs = [{"agent": "analyst", "input": text, "tenant": THRIFTY} for _ in range(100)]

    # When
    outcomes = _run_all(client, jobs, timeout=120)

    # Then: every job ended; the ones refused were refused by the budget; nothing overspent
    done = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if not isinstance(o, dict)]
    assert done
    assert refused
    assert all(isinstance(o, BudgetExceeded) for o in refused), refused[:3]
    assert "tenant thrifty daily budget" in str(refused[0])
    ledger = fleet.budgets.usage(tenant=THRIFTY)
    assert ledger.reserved_usd == 0
    assert ledger.spent_usd <= THRIFTY_BUDGET
    # The ledger keeps micro-dollars, each call's cost rounded up.
    billed = sum(o["cost_usd"] for o in done)
    assert 0 <= ledger.spent_usd - billed <= 1e-6 * len(done)
