"""Redis credentials: required outside the dev stack, and never printed.

A Redis without a password lets anyone who reaches it forge jobs and results. Every process
that serves (workers, the gateway, the exporter) refuses a ``redis://``/``rediss://`` URL
without one, unless ``CHORDAL_ALLOW_NO_PASSWORD`` says the Redis has none on purpose (a test
machine's). ``chordal dev`` gives its embedded broker a random password, so it passes the same
check. :func:`masked` is how a URL is shown: kombu's own sanitizer, as Celery's banner uses.
"""

from __future__ import annotations

from kombu.utils.url import maybe_sanitize_url, url_to_parts

from workers.errors import ConfigurationError
from workers.settings import Settings

REDIS_SCHEMES = ("redis", "rediss")


def masked(url: str | None) -> str:
    """``url`` with its password replaced by ``**``."""
    return str(maybe_sanitize_url(url or ""))


def lacks_password(url: str | None) -> bool:
    """Whether ``url`` is a Redis URL without a password."""
    if not url:
        return False
    parts = url_to_parts(url)
    return parts.scheme in REDIS_SCHEMES and not parts.password


def require_passwords(settings: Settings) -> None:
    """Raise ConfigurationError, naming the setting, for a Redis URL without a password."""
    if settings.allow_no_password:
        return
    named = {"CHORDAL_BROKER_URL": settings.broker_url,
             "CHORDAL_RESULT_BACKEND": settings.result_backend}  # fmt: skip
    for name, url in named.items():
        if lacks_password(url):
            msg = (
                f"{name} ({masked(url)}) has no password: use redis://:PASSWORD@host:port/0 "
                "(or USER:PASSWORD with ACLs), or set CHORDAL_ALLOW_NO_PASSWORD=true for a Redis "
                "that has none on purpose"
            )
            raise ConfigurationError(msg)
