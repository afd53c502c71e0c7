"""Prometheus metrics of every router and tier worker process.

The pipeline reports through :func:`job_started`, :func:`job_finished`, :func:`llm_call`,
:func:`reroute` and :func:`error` (failures that are not an LLM call), all on the
process-wide :data:`METRICS`; tests build a :class:`Metrics` on a registry of their own.
:func:`serve` exposes a registry over HTTP.

**One endpoint per process.** Workers run Celery's threads pool: one process per worker (one
per pod on GKE), tasks in threads, and prometheus-client's metrics are thread-safe. Each
process serves its own registry on its own port, so no multiprocess mode is needed. A prefork
pool's children would count where the parent's endpoint never looks: it would need
``PROMETHEUS_MULTIPROC_DIR`` and ``multiprocess.MultiProcessCollector``.

**Bounded labels.** No label carries a job id or free text. Every value goes through a
:class:`LabelCap`: the first ``limit`` distinct values a process sees are kept, later ones --
and values that look like free text (empty, over 64 characters, with whitespace) -- become
``"other"``. Tenants are capped at 50 (``max_tenants``): the rest still count, as
``tenant="other"``. Agents, models and deployments are capped at 100; providers, tiers and
error kinds at 50. An error kind is the exception's class name (``"RateLimited"``), never its
message. A deployment (of a model group, :mod:`routing.groups`) is its id, or the model's name
where the model has one deployment; ``chordal_llm_deployment_requests_total`` carries it beside
the model, so the series that existed before model groups keep their labels.

**Fleet state** (breakers, budgets, rate limits) lives in Redis, the same for every process:
:class:`FleetCollector` reads it when scraped. Register it once (``chordal exporter``), not
in every worker, or N workers read Redis N times per scrape and publish N copies of a series.

**Never raises for data.** A negative or non-finite amount is dropped (a counter cannot go
down; a NaN would poison every later sum): instrumentation must not fail a job.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

JobState = Literal["succeeded", "failed", "cancelled", "timed_out"]
JOB_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled", "timed_out")
RerouteKind = Literal["retry", "reroute", "fallback", "requeue", "escalate"]
REROUTE_KINDS: tuple[RerouteKind, ...] = ("retry", "reroute", "fallback", "requeue", "escalate")
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
OTHER = "other"
MAX_LABEL_CHARS = 64

# One LLM call: from a cached 50 ms answer to a two-minute reasoning model.
LLM_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
# One agent job: several calls, retries and waits for a free model.
AGENT_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class LabelCap:
    """Keeps the first ``limit`` distinct values of a label; later ones become ``"other"``.

    >>> tenants = LabelCap(1)
    >>> tenants("acme"), tenants("globex"), tenants("acme")
    ('acme', 'other', 'acme')
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a label cap keeps at least one value, not {limit}")
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:  # the common case, without the lock
            return value
        if not value or len(value) > MAX_LABEL_CHARS or any(c.isspace() for c in value):
            return OTHER
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return value if value in self._seen else OTHER

    @property
    def values(self) -> frozenset[str]:
        """The values kept so far."""
        return frozenset(self._seen)


class Metrics:
    """Chordal's counters and histograms in one registry; thread-safe."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_tenants: int = 50,
        max_agents: int = 100,
        max_models: int = 100,
        max_kinds: int = 50,
    ) -> None:
        self.registry = registry
        self.tenants = LabelCap(max_tenants)
        self.agents = LabelCap(max_agents)
        self.models = LabelCap(max_models)
        self.deployments = LabelCap(max_models)
        self.providers = LabelCap(max_kinds)
        self.tiers = LabelCap(max_kinds)
        self.kinds = LabelCap(max_kinds)
        counter, histogram = (
            partial(Counter, registry=registry),
            partial(Histogram, registry=registry),
        )
        self.jobs_started = counter(
            "chordal_jobs_started_total",
            "Jobs an agent task started (running = started - finished).",
            ["agent", "tier", "tenant"],
        )
        self.jobs = counter(
            "chordal_jobs_total",
            "Jobs finished, by final state.",
            ["agent", "tier", "tenant", "state"],
        )
        self.agent_duration = histogram(
            "chordal_agent_duration_seconds",
            "Wall time of one agent job, from start to final state.",
            ["agent", "tier"],
            buckets=AGENT_DURATION_BUCKETS,
        )
        self.llm_duration = histogram(
            "chordal_llm_request_duration_seconds",
            "Latency of one LLM call, whatever its outcome.",
            ["provider", "model"],
            buckets=LLM_LATENCY_BUCKETS,
        )
        self.llm_requests = counter(
            "chordal_llm_requests_total",
            'LLM calls by outcome: "ok" or the error kind.',
            ["provider", "model", "outcome"],
        )
        self.llm_deployment_requests = counter(
            "chordal_llm_deployment_requests_total",
            'LLM calls by model, deployment of it and outcome: "ok" or the error kind.',
            ["model", "deployment", "outcome"],
        )
        self.llm_tokens = counter(
            "chordal_llm_tokens_total",
            'Tokens sent ("in", prompt) and received ("out", completion).',
            ["model", "direction"],
        )
        self.llm_cost = counter(
            "chordal_llm_cost_usd_total",
            "What LLM calls cost, in US dollars.",
            ["model", "tier", "tenant", "agent"],
        )
        self.errors = counter("chordal_errors_total", "Errors by kind (exception class).", ["kind"])
        self.reroutes = counter(
            "chordal_reroutes_total",
            "Jobs sent elsewhere: retry, reroute, fallback, requeue or escalate.",
            ["kind"],
        )

    def job_started(self, *, agent: str, tier: str, tenant: str) -> None:
        """Count a job an agent task starts."""
        self.jobs_started.labels(self.agents(agent), self.tiers(tier), self.tenants(tenant)).inc()

    def job_finished(
        self, *, agent: str, tier: str, tenant: str, state: JobState, duration_s: float
    ) -> None:
        """Count a job in its final ``state`` and observe how long it took."""
        agent, tier = self.agents(agent), self.tiers(tier)
        final = state if state in JOB_STATES else OTHER
        self.jobs.labels(agent, tier, self.tenants(tenant), final).inc()
        if _usable(duration_s):
            self.agent_duration.labels(agent, tier).observe(duration_s)

    def llm_call(
        self,
        *,
        provider: str,
        model: str,
        tier: str,
        tenant: str,
        agent: str,
        outcome: str,
        latency_s: float,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
        deployment: str | None = None,
    ) -> None:
        """Record one LLM call that reached the provider: ``outcome`` is ``"ok"`` or the error
        kind (which is counted in ``chordal_errors_total`` too). ``deployment`` defaults to
        ``model`` (a model with one deployment).

        A call refused before it left (budget, rate limit, open breaker) is not a call: report
        it with :meth:`error`.
        """
        deployed = self.deployments(deployment or model)
        provider, model = self.providers(provider), self.models(model)
        kind = "ok" if outcome == "ok" else self.kinds(outcome)
        self.llm_requests.labels(provider, model, kind).inc()
        self.llm_deployment_requests.labels(model, deployed, kind).inc()
        if _usable(latency_s):
            self.llm_duration.labels(provider, model).observe(latency_s)
        if _usable(tokens_in):
            self.llm_tokens.labels(model, "in").inc(tokens_in)
        if _usable(tokens_out):
            self.llm_tokens.labels(model, "out").inc(tokens_out)
        if _usable(cost_usd):
            labels = (model, self.tiers(tier), self.tenants(tenant), self.agents(agent))
            self.llm_cost.labels(*labels).inc(cost_usd)
        if kind != "ok":
            self.errors.labels(kind).inc()

    def error(self, *, kind: str) -> None:
        """Count an error that is not an LLM call's (an invalid job, a refused admission)."""
        self.errors.labels(self.kinds(kind)).inc()

    def reroute(self, *, reason_kind: RerouteKind) -> None:
        """Count a job sent elsewhere than first planned."""
        self.reroutes.labels(reason_kind if reason_kind in REROUTE_KINDS else OTHER).inc()


def _usable(amount: float) -> bool:
    return math.isfinite(amount) and amount >= 0


@dataclass(frozen=True)
class ModelLimits:
    """A model and its fleet-wide limits (None where it has none)."""

    name: str
    rpm: int | None = None
    tpm: int | None = None


BreakerReader = Callable[[], Mapping[str, str]]
"""Breaker state (``closed``, ``half_open``, ``open``) by model."""
BudgetReader = Callable[[], Mapping[str, tuple[float, float]]]
"""(limit, remaining) USD of today's budget by tenant."""
HeadroomReader = Callable[[], Mapping[str, tuple[int | None, int | None]]]
"""(requests, tokens) left in the current window by model; None where not limited."""

_Samples = Iterable[tuple[str, str, float]]  # (family, label value, value)
_FLEET_GAUGES = {  # family: (help, label)
    # "model" is the deployment's key: the model's name, or the deployment's id in a group of
    # several (routing.groups), so a catalog without groups keeps its series as they were.
    "chordal_breaker_state": ("Circuit breaker: 0 closed, 1 half-open, 2 open.", "model"),
    "chordal_breaker_open": ("1 while the model's circuit breaker is open, else 0.", "model"),
    "chordal_budget_limit_usd": ("A tenant's daily budget, in USD.", "tenant"),
    "chordal_budget_remaining_usd": ("Today's budget neither spent nor reserved.", "tenant"),
    "chordal_ratelimit_remaining_requests": (
        "Requests the model has left in the current rate window, fleet-wide.",
        "model",
    ),
    "chordal_ratelimit_remaining_tokens": (
        "Tokens the model has left in the current rate window, fleet-wide.",
        "model",
    ),
}


class FleetCollector:
    """Breakers, budgets and rate-limit headroom, read from the fleet's Redis at scrape time.

    Each reader is a callable returning plain values, so this module needs none of routing's
    types: tests pass fakes, and ``chordal exporter`` passes readers over the fleet
    (:func:`chordal.exporter.fleet_readers`). A reader that fails (Redis down) only drops its
    own series and sets ``chordal_fleet_up`` to 0: the scrape itself still answers.
    """

    def __init__(
        self,
        *,
        breakers: BreakerReader | None = None,
        budgets: BudgetReader | None = None,
        headroom: HeadroomReader | None = None,
    ) -> None:
        self._sources: list[tuple[str, Callable[[], _Samples]]] = []
        if breakers is not None:
            self._sources.append(("circuit breakers", lambda: _breaker_samples(breakers())))
        if budgets is not None:
            self._sources.append(("budgets", lambda: _budget_samples(budgets())))
        if headroom is not None:
            self._sources.append(("rate limits", lambda: _headroom_samples(headroom())))

    def describe(self) -> Iterable[Metric]:
        """The families, without reading Redis (the registry calls this on register)."""
        return [*_fleet_families().values(), _fleet_up(1.0)]

    def collect(self) -> Iterable[Metric]:
        """Read the fleet now and yield its gauges."""
        families = _fleet_families()
        up = 1.0
        for what, read in self._sources:
            try:
                samples = list(read())
            except Exception:
                log.warning("cannot read the %s for metrics", what, exc_info=True)
                up = 0.0
                continue
            for family, label, value in samples:
                families[family].add_metric([label], value)
        return [*families.values(), _fleet_up(up)]


def _fleet_families() -> dict[str, GaugeMetricFamily]:
    return {
        name: GaugeMetricFamily(name, text, labels=[label])
        for name, (text, label) in _FLEET_GAUGES.items()
    }


def _fleet_up(value: float) -> GaugeMetricFamily:
    text = "1 if every fleet reading (Redis) succeeded in this scrape, else 0."
    return GaugeMetricFamily("chordal_fleet_up", text, value=value)


def _breaker_samples(states: Mapping[str, str]) -> _Samples:
    for model, state in states.items():
        if state in BREAKER_STATES:
            yield "chordal_breaker_state", model, BREAKER_STATES[state]
            yield "chordal_breaker_open", model, 1.0 if state == "open" else 0.0


def _budget_samples(budgets: Mapping[str, tuple[float, float]]) -> _Samples:
    for tenant, (limit, remaining) in budgets.items():
        yield "chordal_budget_limit_usd", tenant, limit
        yield "chordal_budget_remaining_usd", tenant, remaining


def _headroom_samples(headroom: Mapping[str, tuple[int | None, int | None]]) -> _Samples:
    for model, (requests, tokens) in headroom.items():
        if requests is not None:
            yield "chordal_ratelimit_remaining_requests", model, requests
        if tokens is not None:
            yield "chordal_ratelimit_remaining_tokens", model, tokens


def default_registry() -> CollectorRegistry:
    """A registry with prometheus-client's process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


REGISTRY = default_registry()
"""This process's registry: :data:`METRICS` and the process collectors."""
METRICS = Metrics(REGISTRY)
"""This process's metrics; the functions below report to it."""

job_started = METRICS.job_started
job_finished = METRICS.job_finished
llm_call = METRICS.llm_call
error = METRICS.error
reroute = METRICS.reroute


def serve(
    port: int,
    *,
    # Every interface: in k8s Prometheus scrapes, and the readiness probe checks, the pod IP.
    # Off unless CHORDAL_METRICS_PORT is set; counts and timings only, no prompts or keys.
    addr: str = "0.0.0.0",  # nosec B104
    registry: CollectorRegistry = REGISTRY,
) -> WSGIServer:
    """Serve ``registry`` at ``http://addr:port/metrics`` from a daemon thread; returns the
    server (``shutdown()`` then ``server_close()`` stop it; port 0 picks a free one).

    Call it once per process, from ``worker_init`` (the threads pool fires no
    ``worker_process_init``). Each worker process serves its own endpoint: the threads pool
    runs one process per worker, so no multiprocess mode is needed; a prefork pool would need
    ``PROMETHEUS_MULTIPROC_DIR`` and ``MultiProcessCollector`` instead.
    """
    server, _ = start_http_server(port, addr=addr, registry=registry)
    return server
