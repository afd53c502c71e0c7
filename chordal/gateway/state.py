"""What the gateway's endpoints share: the producer client, keys, owners, the rate limit."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import CollectorRegistry, Counter

from agents.client import Client
from chordal.gateway.keys import KeyRing
from chordal.gateway.owners import Owners
from workers.settings import Settings
from workers.tls import redis_ssl

# Owner records outlive the results they guard by this much (s), so a result never outlives
# the record that says whose it is.
OWNER_MARGIN_S = 3600
# The longest an event-stream read blocks (chordal.gateway.stream polls every second).
STREAM_READ_S = 1.0


@dataclass
class Gateway:
    """What the endpoints share: the producer client, the keys, owners and the rate limit."""

    settings: Settings
    client: Client
    keys: KeyRing
    owners: Owners
    limiter: MovingWindowRateLimiter
    rate: RateLimitItem
    registry: CollectorRegistry
    requests: Counter
    async_redis: redis.asyncio.Redis

    @classmethod
    def build(cls, settings: Settings, client: Client | None = None) -> Gateway:
        """Connect to ``settings``' deployment (nothing is contacted until a request)."""
        client = client or Client(settings=settings)
        url = settings.backend_url or settings.broker_url or ""
        bound = settings.submit_timeout_s / 2
        tls = redis_ssl(url, settings)
        storage = storage_from_string(
            url, socket_timeout=bound, socket_connect_timeout=bound, **tls
        )
        registry = CollectorRegistry()
        requests = Counter(
            "chordal_gateway_requests", "Gateway requests by route and status.",
            ["method", "route", "status"], registry=registry,
        )  # fmt: skip
        return cls(
            settings=settings, client=client, keys=KeyRing.from_settings(settings),
            owners=Owners(client.claims.client, ttl_s=settings.result_expires_s + OWNER_MARGIN_S),
            limiter=MovingWindowRateLimiter(storage), rate=parse(settings.gateway_rate_limit),
            registry=registry, requests=requests,
            # Event streams are read on the loop; a blocking read (1 s) outlasts no timeout.
            async_redis=redis.asyncio.Redis.from_url(
                url, socket_timeout=bound + STREAM_READ_S, socket_connect_timeout=bound, **tls
            ),
        )  # fmt: skip
