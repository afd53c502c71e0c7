"""Signed task messages on a real stack: producers and workers sign, workers verify, a
producer's tenant is its certificate's, and an unsigned message ends on the dead-letter list."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from agents.client import Client
from chordal.identity import make_identity
from chordal.stack import LocalStack
from tests.support import stack_settings
from workers.deadletter import read_dead_letters
from workers.errors import ConfigurationError
from workers.settings import Settings
from workers.signing import WORKER_UNIT
from workers.tiers import ROUTE_TASK, ROUTER_QUEUE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Settings]]:
    folder = tmp_path_factory.mktemp("signing")
    worker_key, worker_cert = make_identity(folder, "worker", cn="workers", ou=WORKER_UNIT)
    producer_key, producer_cert = make_identity(folder, "acme", cn="acme")
    store = str(folder / "certs")
    settings = stack_settings(folder / "stack", signing_key=worker_key, signing_cert=worker_cert,
                              signing_cert_store=store)  # fmt: skip
    with LocalStack(settings) as stack:
        producer = stack.settings.model_copy(
            update={"signing_key": producer_key, "signing_cert": producer_cert}
        )
        yield stack, producer


def test_a_signed_job_runs_as_the_tenant_of_its_certificate(
    signed: tuple[LocalStack, Settings],
) -> None:
    _stack, producer = signed
    client = Client(settings=producer)
    try:
        # The payload names another tenant: the certificate says who is asking.
        job_id = client.submit({"agent": "summarizer", "input": "Signed.", "tenant": "other"})
        result = client.wait(job_id, timeout=60)
        team = client.wait(client.submit({"team": "research", "input": "Signed team."}), timeout=90)
    finally:
        client.app.close()

    assert result["tenant"] == "acme"
    assert team["tenant"] == "acme"
    assert {member["tenant"] for member in team["members"]} == {"acme"}


def test_an_unsigned_message_is_dead_lettered_and_the_worker_goes_on(
    signed: tuple[LocalStack, Settings],
) -> None:
    stack, producer = signed
    # A plain Celery producer, as anyone with the broker's password could write one.
    plain = Celery(broker=stack.settings.broker_url)
    plain.conf.update(task_serializer="json", accept_content=["json"])
    forged_id = str(uuid.uuid4())
    plain.send_task(ROUTE_TASK, args=[{"agent": "summarizer", "input": "Unsigned."}],
                    task_id=forged_id, queue=ROUTER_QUEUE)  # fmt: skip
    plain.close()

    client = Client(settings=producer)
    try:
        deadline = time.monotonic() + 30
        letters: list[dict] = []
        while time.monotonic() < deadline:
            letters = [d for d in read_dead_letters(client.app, settings=producer)
                       if d.get("task_id") == forged_id]  # fmt: skip
            if letters:
                break
            time.sleep(0.2)
        after = client.wait(client.submit({"agent": "summarizer", "input": "Still fine."}),
                            timeout=60)  # fmt: skip
    finally:
        client.app.close()

    assert letters, "the unsigned message was not dead-lettered"
    assert "application/json" in letters[0]["reason"]
    assert after["tenant"] == "acme"
    stack.check_alive()


def test_the_store_must_hold_only_certificates(tmp_path: Path) -> None:
    key, cert = make_identity(tmp_path, "one", cn="one")
    wrong = Settings(broker_url="redis://:p@127.0.0.1:1/0", signing_key=key, signing_cert=cert,
                     signing_cert_store=str(tmp_path / "keys"))  # fmt: skip
    with pytest.raises(ConfigurationError, match="message signing: Invalid certificate"):
        Client(settings=wrong)
