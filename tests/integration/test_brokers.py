"""The broker matrix: RabbitMQ as broker (Valkey for results), and plain `celery` workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.client import Client
from chordal.broker import EmbeddedBroker
from chordal.stack import LocalStack
from tests.support import stack_settings
from workers.app import create_app
from workers.settings import Settings
from workers.tiers import ALL_QUEUES, Tier

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def rabbit_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Router and fast worker on RabbitMQ, results in a private Valkey."""
    if not _rabbitmq_listening():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (the broker matrix needs one)")
    data_dir = tmp_path_factory.mktemp("rabbit")
    with EmbeddedBroker(data_dir) as results:
        settings = stack_settings(data_dir, broker_url=RABBITMQ_URL, result_backend=results.url)
        _purge_chordal_queues(settings)
        with LocalStack(settings, tiers=[Tier.FAST]) as stack:
            yield stack


def _purge_chordal_queues(settings: Settings) -> None:
    # Jobs left on the shared server by an earlier, interrupted run must not leak into this one.
    app = create_app(settings)
    try:
        with app.connection_for_write() as connection:
            channel = connection.channel()
            for name in ALL_QUEUES:
                try:
                    channel.queue_purge(name)
                except Exception:  # the queue does not exist yet: nothing to purge
                    channel = connection.channel()
    finally:
        app.close()


def test_job_runs_end_to_end_on_rabbitmq(rabbit_stack: LocalStack) -> None:
    client = Client(settings=rabbit_stack.settings)
    try:
        result = client.wait(
            client.submit({"agent": "summarizer", "input": "over AMQP", "priority": 9}), timeout=60
        )
    finally:
        client.app.close()

    assert result["tier"] == "fast"
    assert result["cost_usd"] > 0


def test_plain_celery_worker_command_serves_a_tier(
    rabbit_stack: LocalStack, tmp_path: Path
) -> None:
    # Given: a balanced-tier worker started with Celery's own command, not `chordal worker`
    log = (tmp_path / "plain.log").open("wb")
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q",
            Tier.BALANCED.queue, "-P", "threads", "-c", "8", "-n", f"plain-{os.getpid()}@%h",
        ],
        env=rabbit_stack.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    client = Client(settings=rabbit_stack.settings)
    try:
        _wait_for_queue(client, Tier.BALANCED.queue, worker)

        # When: a job pinned to that tier is submitted
        result = client.wait(
            client.submit({"agent": "writer", "input": "a haiku", "tier": "balanced"}), timeout=60
        )
    finally:
        client.app.close()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        log.close()

    # Then: that worker answered it
    assert result["tier"] == "balanced"


def _wait_for_queue(client: Client, queue: str, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the plain celery worker exited"
        replies = client.app.control.inspect(timeout=1.0).active_queues() or {}
        if any(q["name"] == queue for queues in replies.values() for q in queues):
            return
    raise AssertionError(f"no worker consumed {queue}")
