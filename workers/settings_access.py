"""The access part of :class:`workers.settings.Settings`: signed messages, TLS to Redis, the
HTTP gateway and job events. A base class of its own only to keep each module short: the
fields are read and documented as every other ``CHORDAL_*`` setting (the prefix is the
subclass's)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings


class AccessSettings(BaseSettings):
    """Fields of :class:`workers.settings.Settings`; never used alone."""

    # Signed task messages (workers/signing.py): all three, or none.
    signing_key: Path | None = Field(default=None, description="This process's private key (PEM).")
    signing_cert: Path | None = Field(default=None, description="Its certificate (PEM).")
    signing_cert_store: str | None = Field(
        default=None, description="The certificates trusted to sign: a folder or a glob."
    )
    signing_digest: str = "sha256"
    allow_no_password: bool = Field(
        default=False, description="Let servers use a Redis without a password (tests only)."
    )
    # TLS to Redis (workers/tls.py): read for rediss:// URLs only, by Celery and every client.
    redis_tls_ca_file: Path | None = Field(
        default=None, description="CA certificates (PEM) to check Redis's; unset: the system's."
    )
    redis_tls_cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM), for a Redis that asks for one."
    )
    redis_tls_key_file: Path | None = Field(
        default=None, description="The client certificate's key (PEM); unset: in the cert file."
    )
    redis_tls_verify: Literal["required", "optional", "none"] = Field(
        default="required",
        description="Check Redis's certificate and host name; none: encrypted but unchecked.",
    )
    # A job's live events (agents/events.py): states, members' states and streamed tokens.
    job_events: bool = Field(default=True, description="Workers record each job's events.")
    stream_maxlen: int = Field(default=10_000, ge=10, description="Events kept per job (about).")
    stream_ttl_s: int = Field(default=3_600, gt=0, description="A job's events expire after.")

    # The HTTP gateway (docs/security.md): API keys, stored as SHA-256 digests, name tenants.
    gateway_host: str = Field(default="127.0.0.1", description="`chordal gateway` listens here.")
    gateway_port: int = Field(default=8080, ge=0, le=65535, description="0: no gateway in dev.")
    gateway_keys: dict[str, str] = Field(
        default_factory=dict,
        description='API key digest -> tenant, JSON: {"sha256:<hex>": "acme"} '
        "(`chordal gateway new-key` makes a key and its entry).",
    )
    gateway_keys_file: Path | None = Field(
        default=None, description="The same mapping in a JSON or YAML file (a mounted secret)."
    )
    gateway_rate_limit: str = Field(
        default="20/second", description="Submits per tenant, in `limits` notation: 20/second."
    )
    gateway_max_body_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="A larger request body answers 413."
    )
