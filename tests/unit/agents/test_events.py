from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis

from agents.events import Event, Events, events_key, read_async, state_data, terminal_event
from chordal.broker import EmbeddedBroker


def test_events_come_back_in_order_after_any_id(connect: Callable[[], redis.Redis]) -> None:
    events = Events(connect(), maxlen=100, ttl_s=60)
    ids = [events.append("j1", "state", {"state": "ROUTED"}),
           events.append("j1", "member", {"member": "m1", "state": "SUCCESS"}),
           events.append("j1", "state", {"state": "SUCCESS"})]  # fmt: skip

    everything = events.read("j1")
    resumed = events.read("j1", after=ids[0])

    assert [e.id for e in everything] == ids
    assert [e.kind for e in everything] == ["state", "member", "state"]
    assert [e.terminal for e in everything] == [False, False, True]
    assert [e.id for e in resumed] == ids[1:]
    assert events.read("other") == []


def test_a_stream_is_bounded_and_expires(connect: Callable[[], redis.Redis]) -> None:
    client = connect()
    events = Events(client, maxlen=10, ttl_s=30)
    for n in range(500):
        events.append("busy", "token", {"text": str(n)})

    kept = events.read("busy")

    # MAXLEN ~ trims whole nodes: about the bound, never all 500.
    assert len(kept) < 200
    assert kept[-1].data == {"text": "499"}
    assert 0 < client.ttl(events_key("busy")) <= 30


def test_a_refused_write_loses_the_event_not_the_caller(valkey: EmbeddedBroker) -> None:
    gone = redis.Redis(port=1, socket_connect_timeout=0.2)
    assert Events(gone, maxlen=10, ttl_s=5).publish("j", "state", {"state": "ROUTED"}) is None


def test_the_asyncio_reader_reads_the_same(connect: Callable[[], redis.Redis],
                                           valkey: EmbeddedBroker) -> None:  # fmt: skip
    first = Events(connect(), maxlen=100, ttl_s=60).append("j2", "state", {"state": "ROUTED"})

    async def read() -> list[str]:
        client = redis.asyncio.Redis.from_url(valkey.url)
        try:
            return [e.id for e in await read_async(client, "j2", after="0-0", block_ms=100)]
        finally:
            await client.aclose()

    assert asyncio.run(read()) == [first]


def test_sse_and_terminal_data() -> None:
    event = Event("17-0", "token", {"member": "m1", "text": "Hi"})
    assert event.sse() == 'id: 17-0\nevent: token\ndata: {"member": "m1", "text": "Hi"}\n\n'
    data = state_data("SUCCESS", {"model": "m", "tier": "fast", "cost_usd": 0.1, "x": 1})
    assert data == {"state": "SUCCESS", "model": "m", "tier": "fast", "cost_usd": 0.1}
    assert terminal_event("ROUTED", {}) is None
    assert terminal_event("REVOKED", None) == {"state": "REVOKED"}
