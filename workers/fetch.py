"""Take a message off its Redis queue and record it as held in one atomic step.

kombu's Redis transport pops a message with ``BRPOP`` and records it in the ``unacked`` hash
in a second command, once the reply has been read. A worker killed between the two (the reply
waits in its socket while the event loop is busy, or while kombu pauses a reply for lack of
prefetch credit) takes the message with it: nothing in Redis says it existed. Measured here: one
job in ~5 runs of the soak drill (D8) and a team of the crash test lost that way.

Here a Lua script pops the message and writes ``unacked``, its index and the worker's held hash
(:class:`workers.redis_pools.HeldQoS`) at once: a message is always in its queue or recorded as
held, so :mod:`workers.recovery` gives back whatever a dead worker took. A script cannot block,
so an idle consumer waits with ``BLPOP`` on a wake list per queue, which every publish through
this channel pushes a token to (capped). Messages that arrive without a token (given back by a
plain kombu client, or published by one) are fetched when the wait times out
(``brpop_timeout``, 1 s). After a message the consumer fetches again at once, without waiting.

This is dramatiq's Redis broker design (one fetch script moving messages into a per-worker set,
heartbeats, dead workers' messages requeued) on kombu's own consumer loop, so Celery's worker,
prefetch credit and acks are unchanged; a plain kombu consumer still shares the queues.
"""

from __future__ import annotations

import logging
from queue import Empty
from time import monotonic
from typing import Any

from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from workers import recovery

logger = logging.getLogger(__name__)

WAKE_PREFIX = "chordal:wake:"
UNREADABLE_KEY = "chordal:unreadable"
# Tokens kept per queue: enough to wake every idle consumer after a burst, bounded when a queue
# has no consumer at all.
WAKE_CAP = 1000
UNREADABLE_CAP = 1000

# KEYS: unacked, unacked index, held hash, unreadable list, the queues' lists in fetch order,
# then their wake lists. ARGV: '1' to record the holder, the unreadable list's cap, how many
# queue lists there are.
# Returns {index of the list, message}, {-1, message} for one set aside as unreadable, or nil
# -- and then the wake tokens go too: every list is empty, so they stand for nothing, and a
# consumer must not wake once per message of a burst it has already taken.
FETCH_SCRIPT = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local last = 4 + tonumber(ARGV[3])
for i = 5, last do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, message = pcall(cjson.decode, item)
    local props = ok and type(message) == 'table' and message['properties']
    local tag = type(props) == 'table' and props['delivery_tag']
    local info = type(props) == 'table' and props['delivery_info']
    if type(tag) ~= 'string' or type(info) ~= 'table' then
      redis.call('LPUSH', KEYS[4], item)
      redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[2]) - 1)
      return {-1, item}
    end
    local exchange = type(info['exchange']) == 'string' and info['exchange'] or ''
    local routing_key = type(info['routing_key']) == 'string' and info['routing_key'] or ''
    local entry = '[' .. item .. ',' .. cjson.encode(exchange) .. ','
      .. cjson.encode(routing_key) .. ']'
    redis.call('ZADD', KEYS[2], now, tag)
    redis.call('HSET', KEYS[1], tag, entry)
    if ARGV[1] == '1' then redis.call('HSET', KEYS[3], tag, routing_key) end
    return {i - 5, item}
  end
end
for i = last + 1, #KEYS do
  redis.call('DEL', KEYS[i])
end
return false
"""


def wake_key(queue: str) -> str:
    """The list a publish to ``queue`` pushes a token to, for idle consumers to wake on."""
    return WAKE_PREFIX + queue


class RecordedFetch:
    """Mixin for kombu's Redis ``Channel``: fetch with :data:`FETCH_SCRIPT`, wait on wake lists.

    Replaces the channel's ``_brpop_start``/``_brpop_read`` (the consumer's poll, in Celery's
    event loop or in ``drain_events``) and adds a wake token to every publish.
    """

    # Set by the fetch, read by HeldQoS.append: this delivery is recorded already.
    _prerecorded: str | None = None
    _fetch_next = True
    _fetching: list[str] | None = None

    def _brpop_start(self, timeout: float | None = None) -> None:
        channel: Any = self
        queues = channel._queue_cycle.consume(len(channel.active_queues))
        if not queues:
            return
        if self._fetch_next:
            lists = [channel._q_for_pri(q, pri) for pri in channel.priority_steps for q in queues]
            holder = recovery.worker_id()
            keys = [
                channel.unacked_key,
                channel.unacked_index_key,
                recovery.held_key(holder or "-"),
                UNREADABLE_KEY,
                *lists,
                *(wake_key(q) for q in queues),
            ]
            # EVAL with the text, not EVALSHA: a restarted Redis (its script cache empty) cannot
            # fail a fetch with NOSCRIPT on this raw connection; Redis compiles it once anyway.
            command = ["EVAL", FETCH_SCRIPT, len(keys), *self._prefixed(keys)]
            command += ["1" if holder else "0", UNREADABLE_CAP, len(lists)]
            self._fetching = lists
        else:
            wait_s = channel.brpop_timeout if timeout is None else timeout
            wake = self._prefixed([wake_key(q) for q in queues])
            command = ["BLPOP", *wake, wait_s or 0]
            self._fetching = None
        channel._in_poll = channel.client.connection
        channel._brpop_sent_at = monotonic()
        channel.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        channel: Any = self
        fetching, self._fetching = self._fetching, None
        try:
            try:
                reply = channel.client.parse_response(
                    channel.client.connection, "EVAL" if fetching else "BLPOP", **options
                )
            except channel.connection_errors:
                channel.client.connection.disconnect()
                raise
            if fetching is None:
                # Woken (or timed out): fetch next, whatever is there.
                self._fetch_next = True
                raise Empty()
            if not reply:
                self._fetch_next = False
                raise Empty()
            self._fetch_next = True
            index, item = int(reply[0]), bytes_to_str(reply[1])
            if index < 0:
                logger.error(
                    "a message that is not a kombu envelope was set aside in %s: %.200s",
                    UNREADABLE_KEY, item,
                )  # fmt: skip
                raise Empty()
            queue = fetching[index].rsplit(channel.sep, 1)[0]
            channel._queue_cycle.rotate(queue)
            payload = loads(item)
            self._prerecorded = payload["properties"]["delivery_tag"]
            try:
                channel.connection._deliver(payload, queue)
            finally:
                self._prerecorded = None
            return True
        finally:
            channel._in_poll = None
            channel._flush_brpop_reauth()

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        channel: Any = self
        batch = kwargs.get("_publish_batch")
        wake = wake_key(queue)
        if batch is not None or (channel._expires and queue in channel._expires):
            super()._put(queue, message, **kwargs)  # type: ignore[misc]
            if batch is not None:
                batch.add("lpush", wake, 1)
                batch.add("ltrim", wake, 0, WAKE_CAP - 1)
            else:
                self._wake(wake)
            return
        # kombu's own _put, with the token in the same round trip.
        key = channel._q_for_pri(queue, channel._get_message_priority(message, reverse=False))
        with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, dumps(message))
            pipe.lpush(wake, 1)
            pipe.ltrim(wake, 0, WAKE_CAP - 1)
            pipe.execute()

    def _wake(self, *wake: str, pipe: Any = None) -> None:
        """Push a token to each wake list (on ``pipe``, else at once)."""
        channel: Any = self
        if pipe is not None:
            for key in wake:
                pipe.lpush(key, 1)
                pipe.ltrim(key, 0, WAKE_CAP - 1)
            return
        with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as own:
            self._wake(*wake, pipe=own)
            own.execute()

    def _prefixed(self, keys: list[str]) -> list[str]:
        prefix = getattr(self, "global_keyprefix", "") or ""
        return [prefix + key for key in keys] if prefix else keys
