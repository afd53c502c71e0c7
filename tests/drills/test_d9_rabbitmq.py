"""D9: the drills on RabbitMQ (127.0.0.1:5672 on this machine), results in a private Valkey.

A vhost of its own holds quorum queues (``CHORDAL_RABBITMQ_QUORUM``) that count deliveries.
Three parts, with the same figures as on Redis: a fast worker holding calls is SIGKILLed (the
broker gives its channel's messages back at once; the copies wait for the dead worker's leases
to lapse instead of calling again); the broker itself is restarted under load (durable queues,
persistent messages); and the core paths -- a single agent, a team -- run end to end.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from agents.client import Client
from chordal.broker import EmbeddedBroker
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.drills.stacks import (
    Producer,
    drill_settings,
    fast_workers,
    sigkill,
    slow_calls,
    two_fast_workers,
)
from tests.drills.support import assert_ledger_matches, ledger_usd, measure
from tests.support import wait_for
from workers.tiers import Tier

pytestmark = [pytest.mark.integration, pytest.mark.drill, pytest.mark.rabbitmq]

VHOST = "chordal-drills"
URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"


def _rabbitmq() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            pass
    except OSError:
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("no rabbitmqctl to make the drills' vhost")
    # A vhost of the drills' own: its queues are quorum queues, the shared default vhost's
    # classic ones (tests/integration/test_brokers.py), and a name holds one type only.
    subprocess.run(["rabbitmqctl", "delete_vhost", VHOST], capture_output=True, check=False)
    subprocess.run(["rabbitmqctl", "add_vhost", VHOST], capture_output=True, check=True)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"],
                   capture_output=True, check=True)  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    _rabbitmq()
    data_dir = tmp_path_factory.mktemp("d9")
    with EmbeddedBroker(data_dir) as results:
        settings = drill_settings(
            data_dir, broker_url=URL, result_backend=results.url, rabbitmq_quorum=True,
            submit_timeout_s=3.0,
        )  # fmt: skip
        with two_fast_workers(settings) as running:
            yield running


def test_d9_core_and_team_jobs_on_rabbitmq(stack: LocalStack) -> None:
    client = Client(settings=stack.settings)
    simulator = SimulatorAdmin(stack.settings.simulator_url)
    try:
        simulator.reset()
        before = ledger_usd(client)
        started = time.monotonic()
        ids = [
            client.submit({"agent": "summarizer", "input": "Over AMQP.", "priority": 9}),
            client.submit({"team": "fast-five", "input": "Five views over AMQP."}),
        ]
        counts = measure("D9 RabbitMQ core and team", client, simulator, ids, started=started,
                         timeout=90, ledger_before=before)  # fmt: skip
    finally:
        client.app.close()
    assert counts.states == {"SUCCESS": 2}
    assert counts.duplicate_calls == 0
    assert_ledger_matches(counts)


@pytest.mark.timeout(420)
def test_d9_sigkill_of_a_fast_worker_on_rabbitmq(stack: LocalStack) -> None:
    client = Client(settings=stack.settings)
    simulator = SimulatorAdmin(stack.settings.simulator_url)
    try:
        simulator.reset()
        # Long enough that the kill lands before any call answers (as in D1).
        slow_calls(simulator, 15.0)
        before = ledger_usd(client)
        started = time.monotonic()
        ids = [
            client.submit({"agent": "summarizer", "input": f"AMQP job {n}.", "tier": "fast"})
            for n in range(100)
        ]
        wait_for(lambda: simulator.stats()["in_flight"] >= 90, timeout=90,
                 what="90 calls in flight")  # fmt: skip
        victim = fast_workers(stack)[0]
        sigkill(stack, victim)
        killed_at = time.monotonic()
        answered_before_kill = sum(simulator.stats()["answered"].values())
        slow_calls(simulator, 0.05)  # the copies that replace the killed calls answer at once
        stack.add_worker(Tier.FAST)
        counts = measure("D9 RabbitMQ SIGKILL a fast worker", client, simulator, ids,
                         started=started, timeout=120, ledger_before=before)  # fmt: skip
        counts.extra.update(after_kill_s=round(time.monotonic() - killed_at, 1))
    finally:
        client.app.close()
    assert answered_before_kill == 0, "calls answered before the kill: not the drill's case"
    assert counts.lost == 0
    assert counts.states == {"SUCCESS": len(ids)}
    assert counts.duplicate_calls == 0
    assert counts.extra["after_kill_s"] <= 60
    assert_ledger_matches(counts)


@pytest.mark.timeout(420)
def test_d9_rabbitmq_restarted_under_load(stack: LocalStack) -> None:
    client = Client(settings=stack.settings)
    simulator = SimulatorAdmin(stack.settings.simulator_url)
    producer = Producer(client, lambda n: {"agent": "summarizer", "input": f"R{n}."}, 200,
                        pause_s=0.02)  # fmt: skip

    try:
        simulator.reset()
        slow_calls(simulator, 0.5)
        before = ledger_usd(client)
        started = time.monotonic()
        producer.start().wait_accepted(60)
        # The machine's RabbitMQ, stopped and started as an operator's restart would.
        subprocess.run(["rabbitmqctl", "stop_app"], capture_output=True, check=True)
        time.sleep(2.0)
        subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, check=True)
        producer.join()
        counts = measure("D9 RabbitMQ restart under load", client, simulator, producer.accepted,
                         started=started, timeout=240, ledger_before=before)  # fmt: skip
        counts.extra.update(submitted=200, refused_while_down=producer.refused)
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, check=False)
        client.app.close()
    assert counts.lost == 0
    assert counts.states == {"SUCCESS": counts.accepted}
    assert counts.duplicate_calls == 0
    assert_ledger_matches(counts)
