from __future__ import annotations

from pathlib import Path

import pytest
from celery.exceptions import SecurityError
from celery.security.certificate import Certificate, FSCertStore
from celery.security.key import PrivateKey

from chordal.identity import make_identity
from workers import signing
from workers.errors import ConfigurationError
from workers.settings import Settings

JOB = {"agent": "summarizer", "input": "x", "tenant": "someone-else"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    make_identity(folder / "store", "acme", cn="acme")
    make_identity(folder / "store", "worker", cn="tier-worker", ou=signing.WORKER_UNIT)
    make_identity(folder / "outsider", "outsider", cn="acme")
    return folder


def signer(certs: Path, name: str, store: str = "store") -> signing.TenantSigner:
    folder = certs / ("outsider" if name == "outsider" else "store")
    return signing.TenantSigner(
        PrivateKey((folder / "keys" / f"{name}.key").read_text()),
        Certificate((folder / "certs" / f"{name}.pem").read_text()),
        FSCertStore(str(certs / store / "certs")),
    )


def test_a_producers_job_gets_the_tenant_of_its_certificate(certs: Path) -> None:
    sent = signer(certs, "acme").serialize([[dict(JOB)], {}, {}])

    args, _kwargs, _embed = signer(certs, "worker").deserialize(sent)

    assert args[0] == {**JOB, "tenant": "acme"}


def test_a_workers_message_passes_as_it_is(certs: Path) -> None:
    body = [[dict(JOB), {"model": "m"}, []], {"member": True}, {}]
    assert signer(certs, "acme").deserialize(signer(certs, "worker").serialize(body)) == body


@pytest.mark.parametrize(
    "body",
    [
        [[dict(JOB), {"model": "chosen-by-me"}, []], {}, {}],  # its own routing decision
        [[dict(JOB)], {"member": True}, {}],  # posing as a team member
        [[], {"job": dict(JOB)}, {}],  # not a job
    ],
)
def test_a_producer_may_send_a_job_and_nothing_else(certs: Path, body: list) -> None:
    with pytest.raises(SecurityError, match="may send a job"):
        signer(certs, "worker").deserialize(signer(certs, "acme").serialize(body))


def test_a_message_signed_by_a_certificate_not_in_the_store_is_refused(certs: Path) -> None:
    forged = signer(certs, "outsider", store="outsider").serialize([[dict(JOB)], {}, {}])
    with pytest.raises(SecurityError, match="Unknown certificate"):
        signer(certs, "worker").deserialize(forged)


def test_serializers_follow_the_settings(certs: Path) -> None:
    assert signing.celery_options(Settings())["accept_content"] == ["json"]
    on = Settings(signing_key=certs / "store" / "keys" / "acme.key",
                  signing_cert=certs / "store" / "certs" / "acme.pem",
                  signing_cert_store=str(certs / "store" / "certs"))  # fmt: skip
    options = signing.celery_options(on)
    assert (options["task_serializer"], options["accept_content"]) == ("auth", ["auth"])
    assert options["result_serializer"] == options["event_serializer"] == "json"
    with pytest.raises(ConfigurationError, match="together"):
        signing.signing_on(Settings(signing_key=certs / "store" / "keys" / "acme.key"))


def test_register_names_a_missing_file(certs: Path) -> None:
    broken = Settings(signing_key=certs / "nope.key",
                      signing_cert=certs / "store" / "certs" / "acme.pem",
                      signing_cert_store=str(certs / "store" / "certs"))  # fmt: skip
    with pytest.raises(ConfigurationError, match="message signing"):
        signing.register(broken)
