"""Queue metrics for autoscaling: each tier's backlog, read from the broker at scrape time.

KEDA's Prometheus scaler (or an HPA on an external metric) scales each tier's workers on its
own queue, for example ``max(chordal_queue_depth{queue="tier.fast"})``. Flower's ``/metrics``
has no queue length (flower #1173), so Chordal publishes its own:

``chordal_queue_depth{queue}``
    Messages waiting (Redis: every priority list; RabbitMQ: ready, not unacked).
``chordal_queue_oldest_age_seconds{queue}``
    How long the oldest waiting message has waited; ``0`` when the queue is empty. **Absent**
    when unknown -- a waiting message without Chordal's enqueue stamp, and always on RabbitMQ
    (AMQP cannot peek). Absent rather than NaN: NaN poisons ``max``/``sum`` and comparisons,
    while an absent series simply drops out; a KEDA query on age should end in ``or
    vector(0)``, and scaling should rest on depth, which is always known.
``chordal_queue_up``
    1 if the broker answered this scrape, else 0; depth and age are then absent, never 0 (a 0
    would tell the autoscaler the backlog is gone).

One reading serves every queue (one Redis round trip; one passive declare per queue on
RabbitMQ) and is reused for ``ttl_s`` (1 s), so two Prometheus replicas scraping at once cost
one read. Run a single exporter per broker (``chordal exporter``, a Deployment of one
replica): queue state is global, so more replicas only repeat it. With ``include_fleet`` the
same endpoint carries the breakers, budgets and rate-limit headroom of
:class:`workers.observability.metrics.FleetCollector`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kombu import Connection
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from workers.observability.metrics import FleetCollector, ModelLimits
from workers.queues import CachedQueueReader, QueueState
from workers.settings import Settings, get_settings
from workers.tiers import ALL_QUEUES

if TYPE_CHECKING:
    from routing.fleet import Fleet

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 1.0


class QueueCollector:
    """Depth and oldest-message age of ``queues``, read from the broker when scraped.

    ``broker`` is a URL (the collector keeps one connection, reopened after an error) or a
    kombu Connection (used as is). Call :meth:`close` when done.
    """

    def __init__(
        self,
        broker: str | Connection,
        *,
        queues: Sequence[str] = ALL_QUEUES,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self._reader = CachedQueueReader(broker, queues, ttl_s=ttl_s)

    def describe(self) -> Iterable[Metric]:
        """The families, without reading the broker (the registry calls this on register)."""
        return _families([], up=1.0)

    def collect(self) -> Iterable[Metric]:
        """Read the broker (or reuse a reading younger than ``ttl_s``) and yield the gauges."""
        try:
            states = list(self._reader.states().values())
        except Exception:
            log.warning("cannot read the queues from the broker", exc_info=True)
            return _families([], up=0.0)
        return _families(states, up=1.0)

    def close(self) -> None:
        """Close the broker connection this collector opened."""
        self._reader.close()


def _families(states: Sequence[QueueState], *, up: float) -> list[Metric]:
    depth = GaugeMetricFamily(
        "chordal_queue_depth", "Messages waiting in the queue.", labels=["queue"]
    )
    age = GaugeMetricFamily(
        "chordal_queue_oldest_age_seconds",
        "How long the oldest waiting message has waited (0 if none; absent if unknown).",
        labels=["queue"],
    )
    for state in states:
        depth.add_metric([state.queue], state.depth)
        if state.oldest_age_s is not None:
            age.add_metric([state.queue], state.oldest_age_s)
    broker_up = GaugeMetricFamily(
        "chordal_queue_up", "1 if the broker answered this scrape, else 0.", value=up
    )
    return [depth, age, broker_up]


def fleet_collector(settings: Settings) -> FleetCollector:
    """Breakers and rate limits of every catalog model, budgets of every listed tenant.

    Raises ConfigurationError without a Redis result backend or with an unreadable catalog.
    """
    # None of these modules imports LiteLLM: the exporter stays small and starts fast.
    from routing.catalog import deployment_id, read_catalog_for
    from routing.fleet import Fleet
    from routing.groups import state_keys

    fleet = Fleet.connect(settings)
    entries = read_catalog_for(settings).model_list
    # One series per deployment, named by its key in the fleet's state: the model's name where
    # the model has one deployment (routing.groups).
    keys = state_keys([(entry.model_name, deployment_id(entry)) for entry in entries])
    models = [
        ModelLimits(
            key,
            rpm=_first(entry.model_info.rpm, entry.litellm_params.get("rpm")),
            tpm=_first(entry.model_info.tpm, entry.litellm_params.get("tpm")),
        )
        for entry, key in zip(entries, keys, strict=True)
    ]
    return fleet_readers(fleet, models=models, tenant_budgets_usd=settings.tenant_budgets_usd)


def fleet_readers(
    fleet: Fleet, *, models: Sequence[ModelLimits], tenant_budgets_usd: Mapping[str, float]
) -> FleetCollector:
    """A collector over a real :class:`~routing.fleet.Fleet`: per scrape, one Redis round
    trip for the breakers, one per budgeted tenant and one per rate-limited model.

    Budgets are reported for the tenants given (``settings.tenant_budgets_usd``): tenants
    under the default budget are an open set, so they are left out. Rate limits are
    reported for the models that have one.
    """
    names = [model.name for model in models]
    limited = [model for model in models if model.rpm is not None or model.tpm is not None]

    def breakers() -> Mapping[str, str]:
        return {state.model: state.state for state in fleet.breakers.states(names)}

    def budgets() -> Mapping[str, tuple[float, float]]:
        return {
            tenant: (limit, fleet.budgets.remaining(tenant=tenant, limit_usd=limit))
            for tenant, limit in tenant_budgets_usd.items()
        }

    def headroom() -> Mapping[str, tuple[int | None, int | None]]:
        left = {m.name: fleet.limits.headroom(m.name, rpm=m.rpm, tpm=m.tpm) for m in limited}
        return {name: (room["requests"], room["tokens"]) for name, room in left.items()}

    return FleetCollector(breakers=breakers, budgets=budgets, headroom=headroom)


def _first(*values: Any) -> int | None:
    # Limits sit in model_info, or in litellm_params as in LiteLLM's proxy config.
    return next((int(value) for value in values if value is not None), None)


def run_exporter(
    *,
    broker_url: str,
    port: int,
    include_fleet: bool,
    settings: Settings | None = None,
    addr: str = "127.0.0.1",
    stop: threading.Event | None = None,
) -> None:
    """Serve the queue metrics (and the fleet's, if ``include_fleet``) on
    ``http://addr:port/metrics`` until ``stop`` is set (or forever without one).

    ``settings`` (default: the environment's) locate the fleet's Redis and the catalog.
    Raises OSError if the port is taken, ConfigurationError if the fleet cannot be read.
    """
    registry = CollectorRegistry()
    queues = QueueCollector(broker_url)
    try:
        registry.register(queues)
        if include_fleet:
            registry.register(fleet_collector(settings or get_settings()))
        server = serve_with_healthz(port, addr=addr, registry=registry)
        try:
            (stop or threading.Event()).wait()
        finally:
            server.shutdown()
            server.server_close()
    finally:
        queues.close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Every probe and scrape would otherwise print a line to stderr."""


def serve_with_healthz(port: int, *, addr: str, registry: CollectorRegistry) -> WSGIServer:
    """``registry`` at ``/metrics`` and a ``/healthz`` that answers without reading anything,
    from a daemon thread; returns the server (``shutdown()`` then ``server_close()``).

    The probes use ``/healthz``: a scrape reads the broker, which took 6.1 s when it was down,
    so a probe on ``/metrics`` restarted the exporter exactly while ChordalBrokerDown should
    fire. (prometheus_client's ``start_http_server`` serves its metrics app on every path.)
    """
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="exporter-http", daemon=True).start()
    return server
