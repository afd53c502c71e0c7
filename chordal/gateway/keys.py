"""API keys and the tenants they name.

Only digests are configured and kept (``sha256:<hex>``), so a leaked settings file or secret
does not leak a usable key. A key is a random 32-byte token; SHA-256 of such a token needs no
salt or slow hash (those defend guessable passwords), and looking a digest up in a dict leaks
nothing about the key through timing.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

import yaml

from workers.errors import ConfigurationError
from workers.settings import TENANT_PATTERN, Settings

PREFIX = "sha256:"
KEY_PREFIX = "chd_"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TENANT = re.compile(TENANT_PATTERN)


def new_key() -> str:
    """A fresh API key (``chd_`` and 43 URL-safe characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    """What is stored for ``key``: ``sha256:<hex>``."""
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Digest -> tenant; :meth:`tenant` answers for a presented key."""

    def __init__(self, tenants_by_digest: Mapping[str, str]) -> None:
        problems = [
            f"{name!r}: not a sha256:<64 hex> digest"
            for name in tenants_by_digest
            if not _DIGEST.match(name)
        ]
        problems += [
            f"{name[:15]}…: tenant {tenant!r} is not 1-64 of A-Z a-z 0-9 _ . : -"
            for name, tenant in tenants_by_digest.items()
            if not _TENANT.match(tenant)
        ]
        if problems:
            raise ConfigurationError("gateway keys: " + "; ".join(problems))
        self._tenants = dict(tenants_by_digest)

    def __len__(self) -> int:
        return len(self._tenants)

    @property
    def tenants(self) -> frozenset[str]:
        """Every tenant some key names."""
        return frozenset(self._tenants.values())

    def tenant(self, key: str) -> str | None:
        """The tenant ``key`` belongs to, or None for an unknown key."""
        return self._tenants.get(digest(key))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """``gateway_keys`` merged with ``gateway_keys_file`` (the file wins on a clash)."""
        tenants = dict(settings.gateway_keys)
        if settings.gateway_keys_file is not None:
            tenants.update(read_keys_file(settings.gateway_keys_file))
        return cls(tenants)


def read_keys_file(path: Path) -> dict[str, str]:
    """A JSON or YAML mapping of digest -> tenant, as a mounted secret holds it."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"gateway keys file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"gateway keys file {path} is not valid JSON/YAML") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigurationError(f'gateway keys file {path}: want {{"sha256:<hex>": "tenant"}}')
    return data
