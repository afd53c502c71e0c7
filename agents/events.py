"""A job's live events: state changes, its members' and streamed tokens, in one Redis Stream.

Each job has a stream, ``chordal:events:<job id>``, that every task working for it appends to:
the job's own state changes (``state``), a team member's (``member``, tagged with the member's
task id and agent) and tokens as the model streams them (``token``). The stream's entry ids
order the events and serve as Server-Sent Events ids, so a reader that reconnects resumes after
the last id it saw (``Last-Event-ID``).

Bounded and expiring: ``XADD ... MAXLEN ~ stream_maxlen`` keeps the newest entries, and each
write renews the stream's expiry (``stream_ttl_s``), so an abandoned stream goes away.

Events are a view, not the record: the job's state in the result backend is what counts, and a
reader that waits without news checks it (:func:`terminal_event`). Writing an event is best
effort -- a Redis error loses that event, never the job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis
import redis.asyncio

logger = logging.getLogger(__name__)

EVENTS_PREFIX = "chordal:events:"
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
Kind = Literal["state", "member", "token"]


def events_key(job_id: str) -> str:
    """The stream of ``job_id``'s events."""
    return f"{EVENTS_PREFIX}{job_id}"


@dataclass(frozen=True)
class Event:
    """One event: its stream id, kind and JSON data."""

    id: str
    kind: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """Whether the job ended with this event (its own state, not a member's)."""
        return self.kind == "state" and self.data.get("state") in TERMINAL_STATES

    def sse(self) -> str:
        """The event as a Server-Sent Events message."""
        return f"id: {self.id}\nevent: {self.kind}\ndata: {json.dumps(self.data)}\n\n"


class Events:
    """Append to and read jobs' event streams on ``client``."""

    def __init__(self, client: redis.Redis, *, maxlen: int, ttl_s: int) -> None:
        self.client = client
        self.maxlen = maxlen
        self.ttl_s = ttl_s

    def publish(self, job_id: str, kind: Kind, data: Mapping[str, Any]) -> str | None:
        """Append one event; its id, or None if Redis refused (logged, never raised)."""
        try:
            return self.append(job_id, kind, data)
        except (redis.RedisError, OSError) as exc:
            logger.warning("event %s of job %s not recorded: %s", kind, job_id, exc)
            return None

    def append(self, job_id: str, kind: Kind, data: Mapping[str, Any]) -> str:
        """Append one event and renew the stream's expiry; raises on a Redis error."""
        key = events_key(job_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(key, {"kind": kind, "data": json.dumps(dict(data))},
                  maxlen=self.maxlen, approximate=True)  # fmt: skip
        pipe.expire(key, self.ttl_s)
        added, _ = pipe.execute()
        return added.decode() if isinstance(added, bytes) else str(added)

    def read(self, job_id: str, *, after: str = "0-0", block_ms: int | None = None) -> list[Event]:
        """Events after ``after`` (an event id), waiting up to ``block_ms`` for one."""
        reply: Any = self.client.xread({events_key(job_id): after}, block=block_ms, count=500)
        return [event for _stream, entries in reply or [] for event in _parse(entries)]

    def last(self, job_id: str) -> Event | None:
        """The newest event of the job's stream, if any."""
        reply: Any = self.client.xrevrange(events_key(job_id), count=1)
        return next(_parse(reply), None)


def newer(event: Event, than: str) -> bool:
    """Whether ``event`` comes after the event id ``than``."""
    return _order(event.id) > _order(than)


def _order(event_id: str) -> tuple[int, int]:
    millis, _, seq = event_id.partition("-")
    return int(millis), int(seq or 0)


async def read_async(
    client: redis.asyncio.Redis, job_id: str, *, after: str, block_ms: int
) -> list[Event]:
    """:meth:`Events.read` on an asyncio client (a server streaming to many readers)."""
    reply: Any = await client.xread({events_key(job_id): after}, block=block_ms, count=500)
    return [event for _stream, entries in reply or [] for event in _parse(entries)]


def _parse(entries: list[tuple[Any, Mapping[Any, Any]]]) -> Iterator[Event]:
    for entry_id, fields in entries:
        text = {_str(k): _str(v) for k, v in fields.items()}
        try:
            data = json.loads(text.get("data", "{}"))
        except ValueError:
            continue  # not ours: nothing a reader could use
        yield Event(_str(entry_id), text.get("kind", "state"), data)


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def state_data(state: str, info: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``state`` event's data: the state, with model, tier and cost when known."""
    data: dict[str, Any] = {"state": state}
    for name in ("model", "tier", "team", "cost_usd", "error", "error_type"):
        if info is not None and info.get(name) is not None:
            data[name] = info[name]
    return data


def terminal_event(state: str, info: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``state`` data a reader records when the result says the job ended but the stream
    does not (its worker's event was lost), or None while it runs."""
    return state_data(state, info) if state in TERMINAL_STATES else None
