"""Row e's cost of signed messages: CPU per task message, Celery's ``auth`` against JSON.

In-process, no broker: what a producer spends signing a job's message and a worker verifying
it (RSA-2048, PSS, SHA-256), against JSON alone. The message is the summarizer job's body as a
producer sends it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery.security.certificate import Certificate, FSCertStore
from celery.security.key import PrivateKey
from kombu.serialization import dumps, loads

from bench.suite_report import Part
from chordal.identity import make_identity
from workers.signing import TenantSigner

BODY = [[{"agent": "summarizer", "input": "Why ack late? " * 20, "tenant": "acme"}], {}, {}]


def _per_call_us(step: Callable[[], Any], samples: int) -> float:
    started = time.process_time()
    for _ in range(samples):
        step()
    return (time.process_time() - started) / samples * 1e6


def signing_cost(part: Part, *, samples: int) -> None:
    """Add the per-message CPU of signing and verifying, and of JSON alone, to ``part``."""
    with tempfile.TemporaryDirectory() as folder:
        key, cert = make_identity(Path(folder), "producer", cn="acme")
        signer = TenantSigner(PrivateKey(key.read_text()), Certificate(cert.read_text()),
                              FSCertStore(str(Path(folder) / "certs")))  # fmt: skip
    signed = signer.serialize(BODY)
    _, _, plain = dumps(BODY, serializer="json")
    sign_us = _per_call_us(lambda: signer.serialize(BODY), samples)
    verify_us = _per_call_us(lambda: signer.deserialize(signed), samples)
    json_us = _per_call_us(lambda: loads(dumps(BODY, serializer="json")[2], "application/json",
                                         "utf-8"), samples)  # fmt: skip
    compared = f"JSON alone {json_us:.0f} µs; sign {sign_us:.0f}, verify {verify_us:.0f}"
    part.add("signed message: sign (producer) + verify (worker) CPU", sign_us + verify_us, "µs",
             compared=compared)  # fmt: skip
    part.details["signing"] = {
        "sign_us": round(sign_us, 1), "verify_us": round(verify_us, 1),
        "json_us": round(json_us, 1), "signed_bytes": len(signed), "json_bytes": len(plain),
    }  # fmt: skip
