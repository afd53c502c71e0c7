from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
import redis.asyncio

from agents.events import Events
from agents.tokens import FLUSH_S, TokenEvents
from chordal.broker import EmbeddedBroker, free_port


def test_pieces_are_batched_and_tagged_with_the_member(
    valkey: EmbeddedBroker, connect: Callable[[], redis.Redis]
) -> None:
    async def stream() -> None:
        client = redis.asyncio.Redis.from_url(valkey.url)
        sink = TokenEvents(client, "job-t", member="m-1", agent="writer", maxlen=100, ttl_s=60)
        try:
            await sink.send("Hel")
            await sink.send("lo")
            await asyncio.sleep(FLUSH_S)
            await sink.send(" wor")  # FLUSH_S since the last write: all three go
            await sink.send("ld")
            await sink.send("!")
            await sink.close()  # and the rest
        finally:
            await client.aclose()

    asyncio.run(stream())

    events = Events(connect(), maxlen=100, ttl_s=60).read("job-t")
    assert "".join(e.data["text"] for e in events) == "Hello world!"
    # Pieces that arrive within FLUSH_S of each other travel together.
    assert [e.data["text"] for e in events] == ["Hello wor", "ld!"]
    assert {(e.kind, e.data["member"], e.data["agent"]) for e in events} == {
        ("token", "m-1", "writer")
    }


def test_after_a_refused_write_the_call_streams_on_without_redis() -> None:
    async def stream() -> TokenEvents:
        client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=0.2)
        sink = TokenEvents(client, "job-x", member=None, agent="writer", maxlen=10, ttl_s=5)
        try:
            await sink.send("one")
            await sink.close()
            assert sink.failed
            started = asyncio.get_running_loop().time()
            for _ in range(5):
                await sink.send("more")
                await sink.flush()
            # Nothing more is tried: no further connect timeouts hold the call.
            assert asyncio.get_running_loop().time() - started < 0.1
            return sink
        finally:
            await client.aclose()

    assert asyncio.run(stream()).sent == 0
