"""Identities for signed task messages: an RSA key and a self-signed certificate, as Celery's
``auth`` serializer wants them (workers/signing.py). For trying signing out, the tests and the
bench; in production, certificates come from your own CA or secret store."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def make_identity(folder: Path, name: str, *, cn: str, ou: str | None = None) -> tuple[Path, Path]:
    """Write ``keys/<name>.key`` and ``certs/<name>.pem`` (subject CN=cn[, OU=ou]) under
    ``folder``: ``certs/`` is then a store (a store folder must hold certificates only)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    subject = x509.Name(attributes)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "keys").mkdir(parents=True, exist_ok=True)
    (folder / "certs").mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / "keys" / f"{name}.key", folder / "certs" / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
