"""TLS to Redis: what a ``rediss://`` URL needs, for Celery and for every client Chordal makes.

Celery's broker and result backend take the TLS options as ``broker_use_ssl`` and
``redis_backend_use_ssl``; redis-py's clients (sync and asyncio, and so the ``limits`` storage)
take the same names as keyword arguments. One dict serves them all, built from the
``CHORDAL_REDIS_TLS_*`` settings, so no client can connect with other (or no) checks than the
workers'. Left to themselves, kombu would not check the server's certificate at all over
``rediss://`` (it warns and falls back to ``CERT_NONE``), and Celery's backend would refuse the
URL.

A ``redis://`` URL gets nothing: redis-py's plain connections take no TLS arguments, and Celery
would otherwise wrap the backend's connections in TLS anyway.
"""

from __future__ import annotations

import ssl
from typing import Any

from workers.errors import ConfigurationError
from workers.settings import Settings, get_settings

TLS_SCHEME = "rediss"
VERIFY_MODES = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}


def uses_tls(url: str | None) -> bool:
    """Whether ``url`` is a Redis URL over TLS."""
    return bool(url) and str(url).partition("://")[0].lower() == TLS_SCHEME


def redis_ssl(url: str | None, settings: Settings | None = None) -> dict[str, Any]:
    """redis-py's TLS keyword arguments for a client of ``url``: none unless it is ``rediss://``.

    ``settings`` default to the process's. Without a CA file the system's trust store checks
    the server (redis-py's default), as for a managed Redis with a public certificate. Raises
    ConfigurationError for a key without its certificate.
    """
    if not uses_tls(url):
        return {}
    settings = settings or get_settings()
    cert, key = settings.redis_tls_cert_file, settings.redis_tls_key_file
    if key is not None and cert is None:
        msg = "CHORDAL_REDIS_TLS_KEY_FILE is set without CHORDAL_REDIS_TLS_CERT_FILE"
        raise ConfigurationError(msg)
    options: dict[str, Any] = {"ssl_cert_reqs": VERIFY_MODES[settings.redis_tls_verify]}
    files = {"ssl_ca_certs": settings.redis_tls_ca_file, "ssl_certfile": cert, "ssl_keyfile": key}
    options.update({name: str(path) for name, path in files.items() if path is not None})
    return options


def celery_ssl(settings: Settings) -> dict[str, Any]:
    """``broker_use_ssl`` and ``redis_backend_use_ssl``, each only for a ``rediss://`` URL
    (an AMQP broker's TLS stays kombu's, from its own URL)."""
    found: dict[str, Any] = {}
    if uses_tls(settings.broker_url):
        found["broker_use_ssl"] = redis_ssl(settings.broker_url, settings)
    if uses_tls(settings.backend_url):
        found["redis_backend_use_ssl"] = redis_ssl(settings.backend_url, settings)
    return found
