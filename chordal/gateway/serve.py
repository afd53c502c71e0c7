"""``chordal gateway``: check the configuration, then serve with uvicorn."""

from __future__ import annotations

import logging

from chordal.gateway.keys import KeyRing
from workers.credentials import require_passwords
from workers.errors import ConfigurationError
from workers.settings import Settings

logger = logging.getLogger("chordal.gateway")


def check(settings: Settings) -> KeyRing:
    """The key ring; raises ConfigurationError when the gateway must not start."""
    if not settings.broker_url:
        raise ConfigurationError("no broker: set CHORDAL_BROKER_URL (or use `chordal dev`)")
    require_passwords(settings)
    keys = KeyRing.from_settings(settings)
    if not keys:
        # Secure by default: no keys would mean no tenants, or everyone as one.
        raise ConfigurationError(
            "no API keys: set CHORDAL_GATEWAY_KEYS or CHORDAL_GATEWAY_KEYS_FILE "
            "(`chordal gateway new-key --tenant NAME` makes a key and its digest); "
            "`chordal dev` makes one for you"
        )
    return keys


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Serve the gateway until SIGINT/SIGTERM."""
    import uvicorn

    from chordal.gateway.app import create_app
    from chordal.gateway.state import Gateway

    check(settings)
    app = create_app(Gateway.build(settings))
    tenants = len(KeyRing.from_settings(settings).tenants)
    logger.info("gateway on http://%s:%d for %d tenant(s)", host, port, tenants)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=int(settings.submit_timeout_s) + 1)  # fmt: skip
