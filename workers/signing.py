"""Signed task messages: Celery's ``auth`` serializer, with the tenant taken from the signer.

With ``CHORDAL_SIGNING_KEY``, ``CHORDAL_SIGNING_CERT`` and ``CHORDAL_SIGNING_CERT_STORE`` set,
every task message is signed by its sender's private key and verified against the certificates
in the store (Celery's ``SecureSerializer``: RSA, ``sha256``). Workers accept nothing else: an
unsigned message, or one signed by a certificate not in the store, cannot be decoded and goes
to the dead-letter list with the reason (:class:`workers.deadletter.DeadLetterConsumer`).
Results and events stay JSON.

Who signed says who is asking. A certificate whose subject has ``OU=chordal-worker`` is a
worker's: its messages (hand-offs, team members) pass as they are. Any other certificate is a
producer's, and its subject's ``CN`` is the tenant: the job's ``tenant`` field is overwritten
with it, and a producer may send only a job (no routing decision, no attempts), so it can
neither spend another tenant's budget nor choose its own model.

Celery's ``setup_security`` registers the stock serializer; this registers a subclass whose
``deserialize`` keeps the verified certificate to read the subject from (Celery's returns only
the body), and lets JSON stay enabled for results and events.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from celery.exceptions import SecurityError
from celery.security.certificate import Certificate, FSCertStore
from celery.security.key import PrivateKey
from celery.security.serialization import SecureSerializer
from celery.security.utils import reraise_errors
from cryptography.x509.oid import NameOID
from kombu.serialization import loads, registry

from workers.errors import ConfigurationError
from workers.settings import TENANT_PATTERN, Settings

SERIALIZER = "auth"
WORKER_UNIT = "chordal-worker"
_TENANT = re.compile(TENANT_PATTERN)


def signing_on(settings: Settings) -> bool:
    """Whether task messages are signed (all three signing settings given)."""
    given = [settings.signing_key, settings.signing_cert, settings.signing_cert_store]
    if any(given) and not all(given):
        msg = ("signing needs CHORDAL_SIGNING_KEY, CHORDAL_SIGNING_CERT and "
               "CHORDAL_SIGNING_CERT_STORE together")  # fmt: skip
        raise ConfigurationError(msg)
    return all(given)


def celery_options(settings: Settings) -> dict[str, Any]:
    """The serializer settings: ``auth`` for tasks when signing is on, JSON everywhere else."""
    task = SERIALIZER if signing_on(settings) else "json"
    return {
        "task_serializer": task,
        "accept_content": [task],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "event_serializer": "json",
    }


def register(settings: Settings) -> None:
    """Register the signing serializer for this process (a no-op when signing is off)."""
    if not signing_on(settings):
        return
    key, cert = Path(str(settings.signing_key)), Path(str(settings.signing_cert))
    try:
        serializer = TenantSigner(
            PrivateKey(key.read_text()), Certificate(cert.read_text()),
            FSCertStore(str(settings.signing_cert_store)), settings.signing_digest,
        )  # fmt: skip
    except (OSError, SecurityError) as exc:
        raise ConfigurationError(f"message signing: {exc}") from exc
    registry.register(SERIALIZER, serializer.serialize, serializer.deserialize,
                      content_type="application/data", content_encoding="utf-8")  # fmt: skip


class TenantSigner(SecureSerializer):  # type: ignore[misc]
    """Celery's signed serializer; a producer's messages get the tenant of its certificate."""

    def deserialize(self, data: Any) -> Any:
        """Verify the signature, then decode, then apply the signer's rights."""
        # Celery's SecureSerializer.deserialize, keeping the certificate it verified against.
        with reraise_errors("Unable to deserialize: {0!r}", (Exception,)):
            payload = self._unpack(data)
            signer = self._cert_store[payload["signer"]]
            signer.verify(payload["body"], payload["signature"], self._digest)
        body = loads(payload["body"], payload["content_type"], payload["content_encoding"],
                     force=True)  # fmt: skip
        return as_signer(body, signer)


def subject(cert: Certificate) -> tuple[str | None, str | None]:
    """The certificate subject's common name and organizational unit."""
    name = cert._cert.subject

    def first(oid: Any) -> str | None:
        found = name.get_attributes_for_oid(oid)
        return str(found[0].value) if found else None

    return first(NameOID.COMMON_NAME), first(NameOID.ORGANIZATIONAL_UNIT_NAME)


def as_signer(body: Any, cert: Certificate) -> Any:
    """``body`` (a task message's ``[args, kwargs, embed]``) with the signer's rights applied."""
    common_name, unit = subject(cert)
    if unit == WORKER_UNIT:
        return body
    if not common_name or not _TENANT.match(common_name):
        raise SecurityError(
            f"a producer certificate's CN must be a tenant name, got {common_name!r}"
        )
    args, kwargs = (
        (body[0], body[1]) if isinstance(body, list | tuple) and len(body) == 3 else ((), {})
    )
    job = args[0] if args and isinstance(args[0], dict) else None
    if job is None or any(args[1:]) or any(kwargs.values()):
        # Only a job: a routing decision, attempts or a team's state come from workers.
        raise SecurityError(f"producer {common_name!r} may send a job, nothing else")
    job["tenant"] = common_name
    return body
