"""Prometheus metrics of the workers: names, labels, values, and the fleet collector."""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Callable, Iterator, Mapping

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chordal.broker import free_port
from workers.observability import metrics
from workers.observability.metrics import FleetCollector, LabelCap, Metrics, serve

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def registry() -> CollectorRegistry:
    """An empty registry of the test's own."""
    return CollectorRegistry()


@pytest.fixture
def fresh(registry: CollectorRegistry) -> Metrics:
    """Chordal's metrics on an empty registry."""
    return Metrics(registry)


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of the registry's text exposition, keyed by name and labels."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None when absent."""
    return samples.get((name, frozenset(labels.items())))


def call(fresh: Metrics, **overrides: object) -> None:
    """One LLM call with sensible defaults."""
    fields: dict[str, object] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "tier": "fast",
        "tenant": "acme",
        "agent": "summarizer",
        "outcome": "ok",
        "latency_s": 0.8,
        "tokens_in": 120,
        "tokens_out": 40,
        "cost_usd": 0.0005,
    }
    fresh.llm_call(**(fields | overrides))  # type: ignore[arg-type]


def test_job_finished_counts_the_state_and_observes_the_duration(
    fresh: Metrics, registry: CollectorRegistry
) -> None:
    # When two jobs succeed and one times out
    fresh.job_started(agent="summarizer", tier="fast", tenant="acme")
    fresh.job_finished(
        agent="summarizer", tier="fast", tenant="acme", state="succeeded", duration_s=0.7
    )
    fresh.job_finished(
        agent="summarizer", tier="fast", tenant="acme", state="succeeded", duration_s=3.0
    )
    fresh.job_finished(
        agent="summarizer", tier="fast", tenant="acme", state="timed_out", duration_s=45.0
    )

    samples = scrape(registry)
    job = {"agent": "summarizer", "tier": "fast", "tenant": "acme"}
    assert value(samples, "chordal_jobs_started_total", **job) == 1
    assert value(samples, "chordal_jobs_total", **job, state="succeeded") == 2
    assert value(samples, "chordal_jobs_total", **job, state="timed_out") == 1
    assert value(samples, "chordal_jobs_total", **job, state="failed") is None
    histogram = {"agent": "summarizer", "tier": "fast"}
    assert value(samples, "chordal_agent_duration_seconds_count", **histogram) == 3
    assert value(samples, "chordal_agent_duration_seconds_sum", **histogram) == pytest.approx(48.7)
    assert value(samples, "chordal_agent_duration_seconds_bucket", **histogram, le="1.0") == 1
    assert value(samples, "chordal_agent_duration_seconds_bucket", **histogram, le="+Inf") == 3


def test_llm_call_moves_latency_requests_tokens_and_cost(
    fresh: Metrics, registry: CollectorRegistry
) -> None:
    call(fresh)
    call(fresh, latency_s=2.5, tokens_in=300, tokens_out=100, cost_usd=0.0015)

    samples = scrape(registry)
    where = {"provider": "openai", "model": "gpt-4o-mini"}
    assert value(samples, "chordal_llm_request_duration_seconds_count", **where) == 2
    assert value(samples, "chordal_llm_request_duration_seconds_bucket", **where, le="1.0") == 1
    assert value(samples, "chordal_llm_requests_total", **where, outcome="ok") == 2
    assert value(samples, "chordal_llm_tokens_total", model="gpt-4o-mini", direction="in") == 420
    assert value(samples, "chordal_llm_tokens_total", model="gpt-4o-mini", direction="out") == 140
    cost = {"model": "gpt-4o-mini", "tier": "fast", "tenant": "acme", "agent": "summarizer"}
    assert value(samples, "chordal_llm_cost_usd_total", **cost) == pytest.approx(0.002)
    assert not [key for key in samples if key[0] == "chordal_errors_total"]


def test_failed_llm_call_counts_its_error_kind(fresh: Metrics, registry: CollectorRegistry) -> None:
    call(fresh, outcome="RateLimited", tokens_in=0, tokens_out=0, cost_usd=0.0)
    call(fresh, outcome="ProviderTimeout", latency_s=30.0, tokens_in=0, tokens_out=0, cost_usd=0)
    fresh.error(kind="BudgetExceeded")

    samples = scrape(registry)
    where = {"provider": "openai", "model": "gpt-4o-mini"}
    assert value(samples, "chordal_llm_requests_total", **where, outcome="RateLimited") == 1
    assert value(samples, "chordal_llm_requests_total", **where, outcome="ProviderTimeout") == 1
    assert value(samples, "chordal_errors_total", kind="RateLimited") == 1
    assert value(samples, "chordal_errors_total", kind="ProviderTimeout") == 1
    assert value(samples, "chordal_errors_total", kind="BudgetExceeded") == 1


def test_reroutes_count_by_bounded_kind(fresh: Metrics, registry: CollectorRegistry) -> None:
    for kind in ("fallback", "fallback", "requeue", "escalate", "retry", "reroute"):
        fresh.reroute(reason_kind=kind)
    fresh.reroute(reason_kind="model gpt-4o was slow")  # type: ignore[arg-type]

    samples = scrape(registry)
    assert value(samples, "chordal_reroutes_total", kind="fallback") == 2
    assert value(samples, "chordal_reroutes_total", kind="escalate") == 1
    assert value(samples, "chordal_reroutes_total", kind="other") == 1


def test_bad_amounts_are_dropped_not_raised(fresh: Metrics, registry: CollectorRegistry) -> None:
    # A counter cannot go down and a NaN would poison every later sum; a job must not fail.
    call(fresh, latency_s=math.nan, tokens_in=-1, tokens_out=5, cost_usd=math.inf)
    fresh.job_finished(agent="a", tier="fast", tenant="t", state="failed", duration_s=-1.0)

    samples = scrape(registry)
    assert value(samples, "chordal_llm_requests_total", provider="openai", model="gpt-4o-mini",
                 outcome="ok") == 1  # fmt: skip
    assert value(samples, "chordal_llm_tokens_total", model="gpt-4o-mini", direction="in") is None
    assert value(samples, "chordal_llm_tokens_total", model="gpt-4o-mini", direction="out") == 5
    assert not [key for key in samples if key[0].startswith("chordal_llm_cost_usd")]
    assert value(samples, "chordal_agent_duration_seconds_count", agent="a", tier="fast") is None


def test_names_follow_prometheus_conventions(fresh: Metrics, registry: CollectorRegistry) -> None:
    # Given every metric moved once, and the fleet collector registered
    fresh.job_started(agent="a", tier="fast", tenant="t")
    fresh.job_finished(agent="a", tier="fast", tenant="t", state="succeeded", duration_s=1.0)
    call(fresh)
    call(fresh, outcome="RateLimited")
    fresh.reroute(reason_kind="fallback")
    registry.register(fake_fleet())

    families = list(registry.collect())

    assert families
    for family in families:
        assert family.name.startswith("chordal_"), family.name
        if family.type == "counter":
            assert {s.name for s in family.samples} <= {
                f"{family.name}_total",
                f"{family.name}_created",
            }
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if family.type == "gauge":
            assert not family.name.endswith("_total"), family.name
        assert not any(unit in family.name for unit in ("_ms", "_milliseconds", "_minutes"))
        for sample in family.samples:
            assert set(sample.labels) <= {
                "agent", "tier", "tenant", "state", "provider", "model", "deployment",
                "outcome", "direction", "kind", "le",
            }  # fmt: skip


def test_tenant_label_is_capped(registry: CollectorRegistry) -> None:
    # Given a cap of two tenants
    capped = Metrics(registry, max_tenants=2)
    for tenant in ("acme", "globex", "initech", "umbrella", "acme"):
        call(capped, tenant=tenant, cost_usd=1.0)

    samples = scrape(registry)
    tenants = {
        dict(labels)["tenant"]: count
        for (name, labels), count in samples.items()
        if name == "chordal_llm_cost_usd_total"
    }
    # Then the first two keep their name and the rest count as "other"
    assert tenants == {"acme": 2.0, "globex": 1.0, "other": 2.0}


def test_label_cap_turns_free_text_into_other() -> None:
    cap = LabelCap(10)
    assert cap("RateLimited") == "RateLimited"
    assert cap("rate limited: retry in 3 s") == "other"
    assert cap("") == "other"
    assert cap("x" * 65) == "other"
    assert cap.values == {"RateLimited"}
    with pytest.raises(ValueError, match="at least one"):
        LabelCap(0)


def fake_fleet(
    *,
    breakers: Callable[[], Mapping[str, str]] | None = None,
    budgets: Callable[[], Mapping[str, tuple[float, float]]] | None = None,
) -> FleetCollector:
    """A collector over fixed readings."""
    return FleetCollector(
        breakers=breakers
        or (lambda: {"gpt-4o": "open", "gpt-4o-mini": "closed", "claude": "half_open"}),
        budgets=budgets or (lambda: {"acme": (5.0, 3.25)}),
        headroom=lambda: {"gpt-4o": (480, None), "claude": (None, 29_000)},
    )


def test_fleet_collector_reads_breakers_budgets_and_headroom(registry: CollectorRegistry) -> None:
    reads: list[str] = []

    def breakers() -> Mapping[str, str]:
        reads.append("breakers")
        return {"gpt-4o": "open", "gpt-4o-mini": "closed", "claude": "half_open"}

    # Registering does not read Redis: only a scrape does
    registry.register(fake_fleet(breakers=breakers))
    assert reads == []

    samples = scrape(registry)

    assert reads == ["breakers"]
    assert value(samples, "chordal_breaker_state", model="gpt-4o") == 2
    assert value(samples, "chordal_breaker_state", model="claude") == 1
    assert value(samples, "chordal_breaker_state", model="gpt-4o-mini") == 0
    assert value(samples, "chordal_breaker_open", model="gpt-4o") == 1
    assert value(samples, "chordal_breaker_open", model="claude") == 0
    assert value(samples, "chordal_budget_remaining_usd", tenant="acme") == 3.25
    assert value(samples, "chordal_budget_limit_usd", tenant="acme") == 5.0
    assert value(samples, "chordal_ratelimit_remaining_requests", model="gpt-4o") == 480
    assert value(samples, "chordal_ratelimit_remaining_tokens", model="claude") == 29_000
    assert value(samples, "chordal_ratelimit_remaining_tokens", model="gpt-4o") is None
    assert value(samples, "chordal_fleet_up") == 1
    # And each scrape reads afresh
    scrape(registry)
    assert reads == ["breakers", "breakers"]


def test_fleet_collector_survives_a_failing_reader(registry: CollectorRegistry) -> None:
    def down() -> Mapping[str, tuple[float, float]]:
        raise ConnectionError("redis is down")

    registry.register(fake_fleet(budgets=down))

    samples = scrape(registry)

    assert value(samples, "chordal_fleet_up") == 0
    assert value(samples, "chordal_breaker_state", model="gpt-4o") == 2
    assert not [key for key in samples if key[0].startswith("chordal_budget")]


def test_process_wide_functions_report_to_the_default_registry() -> None:
    before = metrics.REGISTRY.get_sample_value("chordal_reroutes_total", {"kind": "requeue"}) or 0
    metrics.reroute(reason_kind="requeue")
    after = metrics.REGISTRY.get_sample_value("chordal_reroutes_total", {"kind": "requeue"})
    assert after == before + 1


@pytest.fixture
def served(registry: CollectorRegistry) -> Iterator[str]:
    """The registry served over HTTP; yields the /metrics URL."""
    port = free_port()
    server = serve(port, addr="127.0.0.1", registry=registry)
    yield f"http://127.0.0.1:{port}/metrics"
    server.shutdown()
    server.server_close()


def test_serve_exposes_the_registry_over_http(fresh: Metrics, served: str) -> None:
    fresh.reroute(reason_kind="fallback")

    with urllib.request.urlopen(served, timeout=5) as response:
        text = response.read().decode()

    assert 'chordal_reroutes_total{kind="fallback"} 1.0' in text


def test_calls_are_counted_per_deployment_with_the_label_capped(
    registry: CollectorRegistry,
) -> None:
    # Given a cap of two deployments
    capped = Metrics(registry, max_models=2)
    # When calls go to three deployments of one model, and one to a model with one deployment
    for deployment in ("east", "west", "south", "east"):
        call(capped, model="gpt-x", deployment=deployment)
    call(capped, model="gpt-y")

    samples = scrape(registry)
    counts: dict[str, float] = {}
    for (name, labels), count in samples.items():
        if name == "chordal_llm_deployment_requests_total":
            deployment = dict(labels)["deployment"]
            counts[deployment] = counts.get(deployment, 0.0) + count
    # Then the first two deployments keep their id, the rest count as "other" (gpt-y, a model
    # with one deployment, is labelled by its name, and its model label is capped too)
    assert counts == {"east": 2.0, "west": 1.0, "other": 2.0}
    # and the series that existed before model groups keep their labels
    where = {"provider": "openai", "model": "gpt-x", "outcome": "ok"}
    assert value(samples, "chordal_llm_requests_total", **where) == 4
