"""Chordal on a Valkey with the ACL users of deploy/valkey-users.conf: the workers log in as
chordal-worker, the producer as chordal-producer, and the server refuses neither anything a job
needs, while the producer cannot forge results, take jobs or run admin commands."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from agents.client import Client
from chordal.broker import EmbeddedBroker, free_port
from chordal.gateway.keys import new_key
from chordal.gateway.service import GatewayService
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.support import LATENCY_SCALE, close_client, stack_settings
from workers.cancellation import CANCEL_CHANNEL, request_cancel

pytestmark = pytest.mark.integration

USERS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "valkey-users.conf"
# The test's own user, to read the ACL log: the file has no user that may.
ADMIN = "chordal-test-admin"


@dataclass
class AclDeployment:
    """The server, the stack running as chordal-worker, and the producer's URL."""

    broker: EmbeddedBroker
    stack: LocalStack
    producer_url: str
    worker_url: str


def users_file(path: Path, passwords: dict[str, str], admin_password: str) -> Path:
    """deploy/valkey-users.conf with each placeholder replaced by its password's digest, plus
    the test's admin user."""
    text = USERS_FILE.read_text()
    for user, password in passwords.items():
        placeholder = f"#{user.upper()}_PASSWORD_SHA256"
        assert placeholder in text, f"{placeholder} not in {USERS_FILE}"
        text = text.replace(placeholder, "#" + hashlib.sha256(password.encode()).hexdigest())
    path.write_text(f"{text}\nuser {ADMIN} on >{admin_password} ~* &* +@all\n")
    return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclDeployment]:
    data_dir = tmp_path_factory.mktemp("acl")
    passwords = {"worker": secrets.token_urlsafe(16), "producer": secrets.token_urlsafe(16)}
    admin_password = secrets.token_urlsafe(16)
    users = users_file(data_dir / "users.conf", passwords, admin_password)
    with EmbeddedBroker(
        data_dir, username=ADMIN, password=admin_password, users_file=users
    ) as broker:
        worker_url = broker.url_as("chordal-worker", passwords["worker"])
        with LocalStack(stack_settings(data_dir, broker_url=worker_url)) as stack:
            yield AclDeployment(
                broker, stack, broker.url_as("chordal-producer", passwords["producer"]), worker_url
            )


@pytest.fixture
def admin(deployment: AclDeployment) -> Iterator[redis.Redis]:
    client = deployment.broker.client()
    yield client
    client.close()


@pytest.fixture
def producer_redis(deployment: AclDeployment) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(deployment.producer_url)
    yield client
    client.close()


def refusals(admin: redis.Redis) -> list[str]:
    """What the server refused since the log was last reset: user, command or key."""
    entries = admin.acl_log()
    return [f"{e['username']}: {e['reason']} {e['object']} ({e['context']})" for e in entries]


def test_jobs_run_with_the_worker_and_producer_users_and_nothing_is_refused(
    deployment: AclDeployment, admin: redis.Redis
) -> None:
    # Given: a producer that logs in as chordal-producer, workers as chordal-worker
    admin.acl_log_reset()
    settings = deployment.stack.settings.model_copy(update={"broker_url": deployment.producer_url})
    client = Client(settings=settings)
    try:
        # When: an agent job (keyed and with a deadline: claims and the watchdog's register), a
        # team job (a chord) and one pinned to its tier are run, and a job's events read
        job = {"agent": "summarizer", "input": "over ACLs", "idempotency_key": "acl-1",
               "deadline_at": time.time() + 120}  # fmt: skip
        keyed = client.submit(job)
        team = client.submit({"team": "unanimous", "input": "Both of you, please."})
        pinned = client.submit({"agent": "writer", "input": "a haiku", "tier": "fast"})
        results = [client.wait(job, timeout=60) for job in (keyed, team, pinned)]
        events = list(client.stream(keyed, timeout=30))
        repeat = client.submit(job)
    finally:
        close_client(client)

    # Then: every job succeeded, and the server refused neither user anything
    assert [result["cost_usd"] > 0 for result in results] == [True, True, True]
    assert events[-1].data["state"] == "SUCCESS"
    assert repeat == keyed
    assert refusals(admin) == []


def test_the_gateway_serves_a_job_as_the_producer_user(
    deployment: AclDeployment, admin: redis.Redis, tmp_path: Path
) -> None:
    # Given: the gateway logged in as chordal-producer (owners, rate limits, event streams)
    admin.acl_log_reset()
    key = new_key()
    env = {**deployment.stack.env(), "CHORDAL_BROKER_URL": deployment.producer_url}
    with (
        GatewayService(env=env, port=free_port(), keys={key: "acme"}, log_dir=tmp_path) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10.0) as http,
    ):
        headers = {"Authorization": f"Bearer {key}"}
        # When: a job is submitted over HTTP and its events read to the end
        answer = http.post("/v1/jobs", json={"agent": "summarizer", "input": "x"}, headers=headers)
        job_id = answer.json()["id"]
        with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=60) as sse:
            lines = list(sse.iter_lines())
        status = http.get(f"/v1/jobs/{job_id}", headers=headers).json()

    # Then: it ran, its stream ended with its success, and nothing was refused
    assert answer.status_code == 202
    assert status["state"] == "SUCCESS"
    assert any(line.startswith("data: ") and '"SUCCESS"' in line for line in lines)
    assert refusals(admin) == []


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (("SET", "celery-task-meta-forged", '{"status": "SUCCESS"}'), "forge a result"),
        (("DEL", "celery-task-meta-x"), "delete a result"),
        (("RPOP", "router"), "take a queued job"),
        (("LRANGE", "tier.fast", "0", "-1"), "read queued jobs"),
        (("DEL", "tier.fast"), "drop a queue"),
        (("HSET", "chordal:breaker:gpt-4o", "state", "open"), "trip a breaker"),
        (("HGETALL", "chordal:ledger:2026-01-01"), "read the ledger"),
        (("SET", "chordal:run:x", "1"), "take a lease"),
        (("LPUSH", "unacked", "x"), "touch kombu's unacked messages"),
        (("FLUSHALL",), "empty the server"),
        (("CONFIG", "GET", "*"), "read the configuration"),
        (("KEYS", "*"), "list every key"),
    ],
)
def test_the_producer_user_is_refused(
    producer_redis: redis.Redis, command: tuple[str, ...], what: str
) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        producer_redis.execute_command(*command)


def test_the_producer_user_may_request_a_cancel(
    producer_redis: redis.Redis, admin: redis.Redis
) -> None:
    # A cancel request is the mark and the announcement; the REVOKED result is a worker's write.
    listener = admin.pubsub()
    listener.subscribe(CANCEL_CHANNEL)
    try:
        listener.get_message(timeout=1)  # the subscription's confirmation
        request_cancel(producer_redis, "acl-cancel", ttl_s=60)
        announced = listener.get_message(timeout=5)
    finally:
        listener.close()
    assert admin.exists("chordal:cancelled:acl-cancel") == 1
    assert announced is not None
    assert announced["data"] == b"acl-cancel"


def test_a_producer_cancels_and_the_worker_records_it_revoked(
    deployment: AclDeployment,
) -> None:
    # Given: a job on a call of 20 s, submitted as chordal-producer (who may not write results,
    # so cannot mark it REVOKED itself)
    simulator = SimulatorAdmin(deployment.stack.settings.simulator_url)
    simulator.fault("*", latency_median_s=20 / LATENCY_SCALE, latency_sigma=0.0)
    settings = deployment.stack.settings.model_copy(update={"broker_url": deployment.producer_url})
    client = Client(settings=settings)
    try:
        job_id = client.submit({"agent": "writer", "input": "slowly", "tier": "fast"})
        deadline = time.monotonic() + 30
        while client.status(job_id).state != "ROUTED" and time.monotonic() < deadline:
            time.sleep(0.05)
        # When: it is cancelled mid-call
        client.cancel(job_id)
        # Then: it ends REVOKED, written by the worker that stopped the call
        while not client.status(job_id).done and time.monotonic() < deadline:
            time.sleep(0.1)
        state = client.status(job_id).state
    finally:
        close_client(client)
        simulator.reset()
    assert state == "REVOKED"


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("CONFIG", "SET", "appendonly", "no"),
        ("KEYS", "*"),
        ("SET", "other:key", "1"),
    ],
)
def test_the_worker_user_is_refused_admin_commands_and_other_keys(
    deployment: AclDeployment, command: tuple[str, ...]
) -> None:
    client = redis.Redis.from_url(deployment.worker_url)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    finally:
        client.close()


def test_a_client_without_a_user_is_refused(deployment: AclDeployment) -> None:
    anonymous = redis.Redis(port=deployment.broker.port)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
    finally:
        anonymous.close()
