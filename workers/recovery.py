"""Recovery in seconds: each worker process beats in Redis, and a live one gives a dead one's
unacknowledged messages back to their queues.

With Redis as broker, kombu keeps every delivered, unacknowledged message in its ``unacked``
hash (and its delivery time in ``unacked_index``) and gives it back only after the
``visibility_timeout`` (an hour here), because Redis cannot tell a consumer that died from one
still working. Chordal adds what is missing, the idea of Sidekiq Pro's reliable fetch:

* **Who holds what.** :class:`~workers.redis_pools.HeldQoS` records each delivery tag a worker
  process takes in ``chordal:held:<worker>``, in the same ``MULTI`` as kombu's own bookkeeping,
  and drops it in the same ``MULTI`` as the ack (or reject, or restore).
* **Who is alive.** Every worker process writes ``now`` into the sorted set
  ``chordal:workers`` every ``heartbeat_interval_s`` (:class:`Heartbeat`, a thread of its own:
  a busy event loop must not make a live worker look dead).
* **Giving back.** At each beat a worker looks for processes whose last beat is older than
  ``worker_dead_after_s``. One claims each (``SET NX`` with an expiry, so a restorer that dies
  mid-way is replaced) and gives every message the dead one held back to its queue with
  kombu's own ``QoS.restore_by_tag``: one Redis transaction per message, which moves it from
  ``unacked`` to its queue or finds it already gone, so nothing is lost or doubled even when
  two restorers race. A message given back ``max_deliveries`` times goes to the dead-letter
  list instead (a message that kills every worker that takes it).

A live worker's messages are never touched: its beat is fresh. ``visibility_timeout`` stays as
the last resort (a worker whose heartbeat thread and event loop both stall for that long). On
RabbitMQ none of this runs: the broker gives a closed channel's messages back itself.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from workers.tls import redis_ssl

logger = logging.getLogger(__name__)

WORKERS_KEY = "chordal:workers"
HELD_PREFIX = "chordal:held:"
CLAIM_PREFIX = "chordal:restoring:"
DELIVERIES_HEADER = "chordal_deliveries"
UNACKED_INDEX = "unacked_index"  # kombu's Redis transport: delivery tag -> when delivered
# A claim outlives any restore of one worker's messages; a restorer that dies mid-way is
# replaced once it lapses, and restoring the same message twice is harmless.
CLAIM_TTL_S = 120
SOCKET_TIMEOUT_S = 5.0

_worker_id: str | None = None


def worker_id() -> str | None:
    """This process's worker id, once it started beating; None in producers and tools."""
    return _worker_id


def new_worker_id() -> str:
    """A worker process's id: host and pid for people, a random part for uniqueness."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def held_key(worker: str) -> str:
    """The hash of the delivery tags ``worker`` holds (tag -> queue)."""
    return f"{HELD_PREFIX}{worker}"


def deliveries(headers: dict[str, Any] | None) -> int:
    """How many times a message has been delivered, this delivery included.

    Chordal's restore counts in ``chordal_deliveries``; RabbitMQ's quorum queues count returns
    in ``x-delivery-count``.
    """
    headers = headers or {}
    counted = headers.get(DELIVERIES_HEADER)
    if isinstance(counted, int) and counted > 0:
        return counted
    returned = headers.get("x-delivery-count")
    return int(returned) + 1 if isinstance(returned, int) else 1


def beat(client: redis.Redis, worker: str, *, now: float) -> None:
    """Record that ``worker`` is alive at ``now``."""
    client.zadd(WORKERS_KEY, {worker: now})


def dead_workers(client: redis.Redis, *, now: float, dead_after_s: float) -> list[str]:
    """Workers whose last beat is older than ``dead_after_s``."""
    raw = client.zrangebyscore(WORKERS_KEY, "-inf", now - dead_after_s)
    return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]


def leave(client: redis.Redis, worker: str) -> None:
    """Forget ``worker`` (a clean exit: kombu gave its messages back when its channel closed)."""
    client.zrem(WORKERS_KEY, worker)


@dataclass
class Restored:
    """What one restore of a dead worker did."""

    worker: str
    restored: int = 0
    dead_lettered: int = 0
    tags: list[str] = field(default_factory=list)


DeadLetter = Callable[[dict[str, Any], str, str], None]
"""Called with (message payload, queue, reason) for a message given back too often."""


def restore_worker(
    app: Celery,
    client: redis.Redis,
    dead: str,
    *,
    claimant: str,
    max_deliveries: int,
    dead_letter: DeadLetter,
    on_dead: Callable[[str], object] | None = None,
    give_back: bool = True,
) -> Restored | None:
    """Give back every message ``dead`` held; None if another worker claimed it first.
    ``on_dead`` settles what else it left (its calls in flight) first, so the copies that run
    next start from a clean slate."""
    claim = f"{CLAIM_PREFIX}{dead}"
    if not client.set(claim, claimant, nx=True, ex=CLAIM_TTL_S):
        held_by = client.get(claim)
        if (held_by.decode() if isinstance(held_by, bytes) else held_by) != claimant:
            return None  # another live worker is on it (our own unfinished claim goes on)
    if on_dead is not None:
        on_dead(dead)
    done = Restored(dead)
    # Without give_back (RabbitMQ gives a dead consumer's messages back itself) only what the
    # dead worker left besides its messages is settled.
    listed = client.hkeys(held_key(dead)) if give_back else []
    tags = [t.decode() if isinstance(t, bytes) else str(t) for t in listed]
    if tags:
        with app.connection_for_write() as connection:
            qos = connection.default_channel.qos
            for tag in tags:
                if _too_often(qos, client, tag, max_deliveries=max_deliveries,
                              dead_letter=dead_letter):  # fmt: skip
                    done.dead_lettered += 1
                else:
                    # kombu's own restore: one transaction per message, a no-op if it was acked.
                    qos.restore_by_tag(tag, client=client)
                    done.restored += 1
                done.tags.append(tag)
    pipe = client.pipeline()
    pipe.delete(held_key(dead))
    pipe.zrem(WORKERS_KEY, dead)
    pipe.delete(f"{CLAIM_PREFIX}{dead}")
    pipe.execute()
    return done


def _too_often(
    qos: Any, client: redis.Redis, tag: str, *, max_deliveries: int, dead_letter: DeadLetter
) -> bool:
    raw = client.hget(qos.unacked_key, tag)
    if raw is None:
        return False
    payload, _exchange, queue = json.loads(raw)
    count = deliveries(payload.get("headers"))
    if count < max_deliveries:
        return False
    # Kept on the dead-letter list first, then taken out of unacked: a crash in between
    # dead-letters it twice rather than losing it.
    reason = f"delivered {count} times, and each time its worker died or gave it back"
    dead_letter(payload, str(queue), reason)
    qos._remove_from_indices(tag).execute()
    return True


@dataclass
class Heartbeat:
    """This process's heartbeat thread: beats, runs ``on_beat`` hooks (lease renewal), and
    restores dead workers' messages. Start it once a worker is about to consume."""

    app: Celery
    broker: redis.Redis
    interval_s: float
    dead_after_s: float
    max_deliveries: int
    dead_letter: DeadLetter
    worker: str = field(default_factory=new_worker_id)
    on_beat: Sequence[Callable[[], object]] = ()
    restore: bool = True
    live_tags: Callable[[], set[str]] | None = None
    on_dead: Callable[[str], object] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        """Beat once now (so the worker counts as alive before it holds anything), then in a
        daemon thread; makes :func:`worker_id` return this worker's id."""
        global _worker_id  # noqa: PLW0603 - one heartbeat per worker process
        beat(self.broker, self.worker, now=time.time())
        _worker_id = self.worker
        self._thread = threading.Thread(target=self._run, name="chordal-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, leave_fleet: bool = True) -> None:
        """Stop beating; with ``leave_fleet`` remove this worker from the set at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + SOCKET_TIMEOUT_S)
        if leave_fleet:
            try:
                leave(self.broker, self.worker)
            except redis.RedisError:
                logger.warning("could not leave the worker set; it lapses on its own")

    def _run(self) -> None:
        # Supervised in place: a failed beat (Redis down) is logged and the next one tried.
        while not self._stop.wait(self.interval_s):
            try:
                self.tick(now=time.time())
            except Exception:
                logger.exception("heartbeat failed; trying again in %.1f s", self.interval_s)

    def tick(self, *, now: float) -> list[Restored]:
        """One beat: record liveness, run the hooks, give back what dead workers held."""
        beat(self.broker, self.worker, now=now)
        for hook in self.on_beat:
            hook()
        found = []
        if self.restore:
            orphans = self.give_back_orphans(now=now)
            if orphans.restored or orphans.dead_lettered:
                found.append(orphans)
        for dead in dead_workers(self.broker, now=now, dead_after_s=self.dead_after_s):
            if dead == self.worker:
                continue  # our own beat lapsed (a stall): we are evidently alive
            done = restore_worker(
                self.app, self.broker, dead, claimant=self.worker,
                max_deliveries=self.max_deliveries, dead_letter=self.dead_letter,
                on_dead=self.on_dead, give_back=self.restore,
            )  # fmt: skip
            if done is not None:
                logger.warning(
                    "worker %s stopped beating: gave back %d message(s), dead-lettered %d",
                    dead, done.restored, done.dead_lettered,
                )  # fmt: skip
                found.append(done)
        return found

    def give_back_orphans(self, *, now: float) -> Restored:
        """Give back what this live worker's held hash lists but none of its open channels
        holds: messages of a channel that died with the connection, whose own give-back failed
        because Redis was away. Without this they would wait for the visibility timeout."""
        done = Restored(self.worker)
        if self.live_tags is None:
            return done
        key = held_key(self.worker)
        listed = [t.decode() if isinstance(t, bytes) else str(t) for t in self.broker.hkeys(key)]
        if not listed:
            return done
        live = self.live_tags()
        candidates = [tag for tag in listed if tag not in live]
        if not candidates:
            return done
        # Written with kombu's entry in one MULTI: a tag only just delivered may not be in a
        # channel's memory yet, so only tags delivered two beats ago count.
        scores = self.broker.zmscore(UNACKED_INDEX, candidates)
        settled = now - 2 * self.interval_s
        with self.app.connection_for_write() as connection:
            qos = connection.default_channel.qos
            for tag, score in zip(candidates, scores, strict=True):
                if score is not None and score > settled:
                    continue
                if score is not None:
                    if _too_often(qos, self.broker, tag, max_deliveries=self.max_deliveries,
                                  dead_letter=self.dead_letter):  # fmt: skip
                        done.dead_lettered += 1
                    else:
                        qos.restore_by_tag(tag, client=self.broker)
                        done.restored += 1
                    done.tags.append(tag)
                self.broker.hdel(key, tag)
        if done.tags:
            logger.warning("gave back %d message(s) a lost connection left behind",
                           len(done.tags))  # fmt: skip
        return done


def broker_client(url: str) -> redis.Redis:
    """A client of the broker's Redis for the heartbeat, with timeouts so a beat never hangs."""
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
        **redis_ssl(url),
    )  # fmt: skip
