"""The autoscaling exporter: queue depth and age per tier, scraped over HTTP from a real broker."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import typer
from celery import Celery
from celery.signals import before_task_publish
from kombu import Connection
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

import workers.app
from chordal.broker import EmbeddedBroker, free_port
from chordal.cli.exporter import register
from chordal.exporter import QueueCollector, run_exporter
from routing.fleet import Fleet
from workers.app import create_app
from workers.observability.metrics import serve
from workers.queues import enqueue_stamp
from workers.settings import Settings
from workers.tiers import AGENT_TASK, ALL_QUEUES, QUALITY_TIERS, ROUTER_QUEUE, Tier

FAST, BALANCED, PREMIUM = (tier.queue for tier in QUALITY_TIERS)
LOCAL = Tier.LOCAL.queue
CATALOG = """
model_list:
  - model_name: limited-mini
    litellm_params: {model: gpt-4.1-mini, rpm: 600}
    model_info: {tier: fast, quality: 0.5, expected_latency_s: 1.0, tpm: 100000}
  - model_name: unlimited-pro
    litellm_params: {model: gpt-5}
    model_info: {tier: premium, quality: 0.9, expected_latency_s: 9.0}
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def celery_app(valkey: EmbeddedBroker) -> Iterator[Celery]:
    """Chordal's Celery app on an emptied test broker; nothing consumes its queues."""
    with redis.Redis.from_url(valkey.url) as client:
        client.flushdb()
    app = create_app(Settings(broker_url=valkey.url))
    yield app
    app.close()


def publish(app: Celery, queue: str, *, enqueued_at: float | None = None) -> None:
    """Send one agent task to ``queue``; ``enqueued_at=None`` sends it without Chordal's stamp."""
    send = app.send_task
    if enqueued_at is not None:
        send(AGENT_TASK, args=[{}], queue=queue, headers=enqueue_stamp(now=enqueued_at))
        return
    before_task_publish.disconnect(workers.app._stamp)
    try:
        send(AGENT_TASK, args=[{}], queue=queue)
    finally:
        before_task_publish.connect(workers.app._stamp)


@pytest.fixture
def serve_registry() -> Iterator[Callable[[CollectorRegistry], str]]:
    """Serve a registry on a free port; yields a factory returning the /metrics URL."""
    servers = []

    def start(registry: CollectorRegistry) -> str:
        port = free_port()
        servers.append(serve(port, addr="127.0.0.1", registry=registry))
        return f"http://127.0.0.1:{port}/metrics"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def scrape(url: str) -> Samples:
    """Every sample the endpoint serves, parsed as Prometheus would."""
    with urllib.request.urlopen(url, timeout=15) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_queue(samples: Samples, name: str) -> dict[str, float]:
    """One family's values by their ``queue`` label."""
    return {dict(labels)["queue"]: v for (n, labels), v in samples.items() if n == name}


def test_depth_and_age_per_tier_queue(
    celery_app: Celery, valkey: EmbeddedBroker, serve_registry: Callable[[CollectorRegistry], str]
) -> None:
    # Given three jobs waiting on the fast tier, the oldest for 30 s, and one on balanced
    now = time.time()
    for age in (30, 10, 1):
        publish(celery_app, FAST, enqueued_at=now - age)
    publish(celery_app, BALANCED, enqueued_at=now - 2)
    registry = CollectorRegistry()
    collector = QueueCollector(valkey.url)
    registry.register(collector)
    try:
        # When Prometheus scrapes the exporter
        samples = scrape(serve_registry(registry))
    finally:
        collector.close()

    # Then every queue has its depth, and its age (0 when empty)
    assert by_queue(samples, "chordal_queue_depth") == {
        ROUTER_QUEUE: 0, FAST: 3, BALANCED: 1, PREMIUM: 0, LOCAL: 0,
    }  # fmt: skip
    ages = by_queue(samples, "chordal_queue_oldest_age_seconds")
    assert set(ages) == set(ALL_QUEUES)
    assert 30 <= ages[FAST] < 40
    assert 2 <= ages[BALANCED] < 12
    assert ages[PREMIUM] == ages[ROUTER_QUEUE] == 0.0
    assert samples[("chordal_queue_up", frozenset())] == 1


def test_unknown_age_is_absent_while_depth_is_known(
    celery_app: Celery, valkey: EmbeddedBroker, serve_registry: Callable[[CollectorRegistry], str]
) -> None:
    # Given a message a plain Celery producer sent, without Chordal's enqueue stamp
    publish(celery_app, FAST)
    registry = CollectorRegistry()
    collector = QueueCollector(valkey.url, queues=[FAST, PREMIUM])
    registry.register(collector)
    try:
        samples = scrape(serve_registry(registry))
    finally:
        collector.close()

    assert by_queue(samples, "chordal_queue_depth") == {FAST: 1, PREMIUM: 0}
    assert by_queue(samples, "chordal_queue_oldest_age_seconds") == {PREMIUM: 0.0}


def test_broker_down_reports_up_zero_and_no_depth(
    serve_registry: Callable[[CollectorRegistry], str],
) -> None:
    # Given a broker nobody listens on (no connection retries: the test need not wait)
    dead = Connection(f"redis://127.0.0.1:{free_port()}/0", transport_options={"max_retries": 0})
    registry = CollectorRegistry()
    registry.register(QueueCollector(dead))
    try:
        samples = scrape(serve_registry(registry))
    finally:
        dead.release()

    # Then the scrape still answers, says the broker is down, and claims no backlog at all
    assert samples[("chordal_queue_up", frozenset())] == 0
    assert by_queue(samples, "chordal_queue_depth") == {}


def test_repeated_scrapes_within_the_ttl_read_the_broker_once(
    celery_app: Celery, valkey: EmbeddedBroker, serve_registry: Callable[[CollectorRegistry], str]
) -> None:
    registry = CollectorRegistry()
    collector = QueueCollector(valkey.url, queues=[FAST], ttl_s=60.0)
    registry.register(collector)
    url = serve_registry(registry)
    try:
        first = scrape(url)
        publish(celery_app, FAST, enqueued_at=time.time())
        second = scrape(url)
    finally:
        collector.close()

    assert by_queue(first, "chordal_queue_depth") == by_queue(second, "chordal_queue_depth")


def wait_for(url: str, *, timeout_s: float = 10.0) -> Samples:
    """Scrape ``url`` once its server is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return scrape(url)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_run_exporter_serves_queues_and_the_fleet(
    celery_app: Celery, valkey: EmbeddedBroker, tmp_path: Path
) -> None:
    # Given a catalog with one rate-limited model, a tenant budget and an open breaker
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    settings = Settings(
        broker_url=valkey.url, catalog_path=catalog, tenant_budgets_usd={"acme": 5.0}
    )
    Fleet.connect(settings).breakers.force_open("unlimited-pro", seconds=60)
    publish(celery_app, PREMIUM, enqueued_at=time.time())
    port, stop = free_port(), threading.Event()
    options = {"broker_url": valkey.url, "port": port, "include_fleet": True}
    exporter = threading.Thread(
        target=run_exporter,
        kwargs={**options, "settings": settings, "addr": "127.0.0.1", "stop": stop},
    )
    exporter.start()
    try:
        samples = wait_for(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop.set()
        exporter.join(timeout=10)

    assert not exporter.is_alive()
    assert by_queue(samples, "chordal_queue_depth")[PREMIUM] == 1
    get = samples.get
    assert get(("chordal_breaker_state", frozenset({("model", "unlimited-pro")}))) == 2
    assert get(("chordal_breaker_open", frozenset({("model", "limited-mini")}))) == 0
    assert get(("chordal_budget_remaining_usd", frozenset({("tenant", "acme")}))) == 5.0
    left = ("chordal_ratelimit_remaining_requests", frozenset({("model", "limited-mini")}))
    assert get(left) == 600
    tokens = ("chordal_ratelimit_remaining_tokens", frozenset({("model", "limited-mini")}))
    assert get(tokens) == 100_000
    assert get(("chordal_fleet_up", frozenset())) == 1


def test_healthz_answers_while_the_broker_does_not() -> None:
    # Given a "broker" that takes connections into its backlog and never answers
    black_hole = socket.create_server(("127.0.0.1", 0))
    broker_url = f"redis://127.0.0.1:{black_hole.getsockname()[1]}/0"
    port, stop = free_port(), threading.Event()
    exporter = threading.Thread(
        target=run_exporter,
        kwargs={"broker_url": broker_url, "port": port, "include_fleet": False, "stop": stop},
    )
    exporter.start()
    try:
        # Then the probe's endpoint answers at once, without waiting on the broker
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as got:
                    status, body = got.status, got.read()
                break
            except urllib.error.URLError:  # not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        stop.set()
        exporter.join(timeout=10)
        black_hole.close()

    assert (status, body) == (200, b"ok\n")


def test_cli_registers_the_exporter_command() -> None:
    cli = typer.Typer()

    @cli.command()
    def other() -> None:
        """A second command, so typer keeps subcommands by name."""

    register(cli)

    result = CliRunner().invoke(cli, ["exporter", "--help"])

    assert result.exit_code == 0, result.output
    assert "--port" in result.output
    assert "--no-fleet" in result.output
