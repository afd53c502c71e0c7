"""Streamed tokens into the job's event stream (:mod:`agents.events`), on the event loop.

A model streams a few characters at a time; one Redis write per piece would cost more than the
call. The sink holds pieces and writes them as one ``token`` event at most every
``FLUSH_S`` (and at the end), through the loop's own ``redis.asyncio`` client, so a streamed
call never blocks the loop on Redis. Best effort, as every event: a write Redis refuses is
logged, the rest of the answer still streams, and the call itself never fails for it.

With ``store_redacted`` the text is redacted before it is written, through a
:class:`~workers.observability.redaction.RedactingStream`: a secret split between two pieces is
still caught, at the price of the last few hundred characters reaching the stream only with
the next write (or the last).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
import redis.asyncio

from agents.events import events_key
from workers.observability.redaction import RedactingStream

logger = logging.getLogger(__name__)

# At most this often (s) a streamed call writes its tokens: ~20 events a second per call.
FLUSH_S = 0.05


class TokenEvents:
    """A :class:`routing.llm.TokenSink` writing ``token`` events for one job (a member's tagged
    with its task id and agent)."""

    def __init__(
        self, client: redis.asyncio.Redis, job_id: str, *, member: str | None, agent: str,
        maxlen: int, ttl_s: int, redacted: bool = False,
    ) -> None:  # fmt: skip
        self.client, self.key = client, events_key(job_id)
        self.redactor = RedactingStream() if redacted else None
        self.tag: dict[str, Any] = {} if member is None else {"member": member, "agent": agent}
        self.maxlen, self.ttl_s = maxlen, ttl_s
        self.held: list[str] = []
        self.flushed_at = time.monotonic()
        self.sent = 0
        # After a write Redis refused, the rest of this call's tokens are dropped: each try
        # would hold the streamed call for a socket timeout.
        self.failed = False

    async def send(self, text: str) -> None:
        """Hold ``text``; write what is held if the last write was ``FLUSH_S`` ago."""
        self.held.append(text)
        if time.monotonic() - self.flushed_at >= FLUSH_S:
            await self.flush()

    async def close(self) -> None:
        """Write what is still held."""
        await self.flush(last=True)

    async def flush(self, *, last: bool = False) -> None:
        """One ``token`` event with the text held (``last``: and nothing more will come)."""
        text = "".join(self.held)
        self.held.clear()
        self.flushed_at = time.monotonic()
        if self.redactor is not None:
            text = self.redactor.feed(text) + (self.redactor.finish() if last else "")
        if not text or self.failed:
            return
        data = {**self.tag, "text": text}
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xadd(self.key, {"kind": "token", "data": json.dumps(data)},
                          maxlen=self.maxlen, approximate=True)  # fmt: skip
                pipe.expire(self.key, self.ttl_s)
                await pipe.execute()
            self.sent += 1
        except (redis.RedisError, OSError) as exc:
            self.failed = True
            logger.warning("tokens of %s not recorded from here on: %s", self.key, exc)
