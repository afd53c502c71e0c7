"""The dead-letter list: messages no worker could process, kept for inspection and replay.

Celery acknowledges or rejects such messages and only logs them, so they are gone. Chordal's
consumer records each one first, on a Redis list in the result backend named by
``CHORDAL_DEAD_LETTER_KEY``: an ``id`` to name it by, the reason, and the message as it came
(raw body, content type and encoding, headers, properties, exchange and routing key), so that
:func:`replay_dead_letter` can publish it again unchanged. The list keeps the newest
``dead_letter_max`` records and expires ``dead_letter_retention_days`` after its last write.

A message is acknowledged only once its record is written: if Redis cannot take the record,
the consumer gives the message back to its queue after a pause (see
:meth:`DeadLetterConsumer.give_back_later`) rather than dropping it unrecorded.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from celery.worker.consumer import Consumer
from kombu import Exchange, Queue

from workers.errors import BrokerUnavailable, ChordalError
from workers.observability.redaction import redact, redact_json, redact_value
from workers.settings import Settings, get_settings

logger = logging.getLogger(__name__)

REDELIVER_PAUSE_S = 1.0
"""How long a poison message is held before it goes back to its queue, when its record could
not be written: long enough that a worker does not spin on it while Redis is down."""

# The message properties a replay must carry over; the rest (delivery tag, body encoding,
# delivery info) belong to one delivery by one transport.
KEPT_PROPERTIES = ("correlation_id", "reply_to", "priority", "delivery_mode")
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}


class NotReplayable(ChordalError):
    """The record does not hold a message that can be published again."""


def dead_letter(
    app: Celery,
    *,
    reason: str,
    queue: str | None,
    body: Any,
    task: str | None = None,
    task_id: str | None = None,
    headers: Any = None,
    settings: Settings | None = None,
) -> str | None:
    """Record a task that failed in its worker (only its arguments are known); its id, or None
    (logged) if Redis is unreachable. Use :func:`record_dead_letter` to know why."""
    try:
        return record_dead_letter(
            app, reason=reason, queue=queue, body=body, task=task, task_id=task_id,
            headers=headers, settings=settings,
        )  # fmt: skip
    except BrokerUnavailable:
        logger.exception("could not dead-letter %s[%s] (%s)", task, task_id, reason)
        return None


def record_dead_letter(
    app: Celery,
    *,
    reason: str,
    queue: str | None,
    body: Any,
    task: str | None = None,
    task_id: str | None = None,
    headers: Any = None,
    message: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> str:
    """Push one record (newest first), trim the list and renew its expiry; returns its id.

    ``message`` holds what a replay needs to publish the message as it came (see
    :func:`message_fields`); without it only ``task`` with ``body`` ``{"args", "kwargs"}`` can
    be replayed. Raises BrokerUnavailable if the record could not be written.
    """
    settings = settings or get_settings()
    kept = printable(body)
    if settings.store_redacted:
        # Bytes that are not text cannot be redacted, so they are not kept; a replay sends the
        # redacted message.
        withheld = isinstance(kept, dict) and set(kept) == {"base64"}
        kept = {"withheld": "a body that is not UTF-8 text"} if withheld else redact_json(kept)
        reason, headers = redact(reason), redact_value(headers)
    record = {
        "id": uuid.uuid4().hex,
        "reason": reason,
        "queue": queue,
        "task": task,
        "task_id": task_id,
        "headers": headers,
        "body": kept,
        **(message or {}),
        "at": time.time(),
    }
    encoded = json.dumps(record, default=repr)
    try:
        # One MULTI/EXEC: a list that is never trimmed or never expires would grow without end.
        with app.backend.client.pipeline(transaction=True) as pipe:
            pipe.lpush(settings.dead_letter_key, encoded)
            pipe.ltrim(settings.dead_letter_key, 0, settings.dead_letter_max - 1)
            pipe.expire(settings.dead_letter_key, int(settings.dead_letter_retention_days * 86400))
            pipe.execute()
    except (redis.RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot write the dead-letter record: {exc}") from exc
    return str(record["id"])


def message_fields(message: Any) -> dict[str, Any]:
    """What a replay needs from a kombu message, besides its body and headers."""
    info = message.delivery_info or {}
    properties = message.properties or {}
    return {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "properties": {key: properties[key] for key in KEPT_PROPERTIES if key in properties},
        "exchange": info.get("exchange") or "",
    }


def record_payload(
    app: Celery,
    payload: dict[str, Any],
    *,
    queue: str,
    reason: str,
    exchange: str = "",
    settings: Settings | None = None,
) -> str:
    """Record a message as kombu's Redis transport stores it (a queue or ``unacked`` entry),
    replayable as it came; raises BrokerUnavailable like :func:`record_dead_letter`."""
    properties = payload.get("properties") or {}
    body = payload.get("body")
    if properties.get("body_encoding") == "base64" and isinstance(body, str):
        body = base64.b64decode(body)
    headers = payload.get("headers") or {}
    message = {
        "content_type": payload.get("content-type"),
        "content_encoding": payload.get("content-encoding"),
        "properties": {key: properties[key] for key in KEPT_PROPERTIES if key in properties},
        "exchange": exchange,
    }
    return record_dead_letter(
        app, reason=reason, queue=queue, task=headers.get("task"), task_id=headers.get("id"),
        headers=headers, body=body, message=message, settings=settings,
    )  # fmt: skip


def read_dead_letters(
    app: Celery, *, limit: int = 100, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` dead-letter records, newest first."""
    key = (settings or get_settings()).dead_letter_key
    raw = app.backend.client.lrange(key, 0, limit - 1)
    return [json.loads(item) for item in raw]


def find_dead_letter(
    app: Celery, record_id: str, *, settings: Settings | None = None
) -> dict[str, Any] | None:
    """The record called ``record_id``, or None."""
    found = _find(app, record_id, (settings or get_settings()).dead_letter_key)
    return None if found is None else found[1]


@dataclass(frozen=True)
class Replay:
    """One replayed record, and the task id its message runs under now (None: not a task)."""

    record: dict[str, Any]
    task_id: str | None


def replay_dead_letter(app: Celery, record_id: str, *, settings: Settings | None = None) -> Replay:
    """Publish the record's message to its queue again, then remove the record.

    The record stays if publishing fails. Raises LookupError for an unknown id, NotReplayable
    for a record that holds no message.
    """
    key = (settings or get_settings()).dead_letter_key
    found = _find(app, record_id, key)
    if found is None:
        raise LookupError(f"no dead letter {record_id!r}")
    raw, record = found
    task_id = _publish(app, record)
    # Removed only now that the message is back in its queue: a failed publish keeps it.
    app.backend.client.lrem(key, 1, raw)
    return Replay(record, task_id)


@dataclass
class Replayed:
    """What ``replay --all`` did: ids published again, and ids kept with the reason why."""

    replayed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)


def replay_dead_letters(app: Celery, *, settings: Settings | None = None) -> Replayed:
    """Replay every record, oldest first; a record that cannot be replayed stays.

    The records are read once, first: a message that is dead-lettered again during the replay
    gets a new record, which this call does not replay a second time.
    """
    key = (settings or get_settings()).dead_letter_key
    done = Replayed()
    for raw in reversed(app.backend.client.lrange(key, 0, -1)):
        record = json.loads(raw)
        name = str(record.get("id") or f"at {record.get('at')}")
        try:
            _publish(app, record)
        except NotReplayable as exc:
            done.kept[name] = str(exc)
            continue
        app.backend.client.lrem(key, 1, raw)
        done.replayed.append(name)
    return done


def purge_dead_letter(app: Celery, record_id: str, *, settings: Settings | None = None) -> bool:
    """Delete one record; False if there was none by that id."""
    key = (settings or get_settings()).dead_letter_key
    found = _find(app, record_id, key)
    return found is not None and bool(app.backend.client.lrem(key, 1, found[0]))


def purge_dead_letters(app: Celery, *, settings: Settings | None = None) -> int:
    """Delete every record; returns how many there were."""
    key = (settings or get_settings()).dead_letter_key
    with app.backend.client.pipeline(transaction=True) as pipe:
        pipe.llen(key)
        pipe.delete(key)
        count, _ = pipe.execute()
    return int(count)


def _find(app: Celery, record_id: str, key: str) -> tuple[bytes, dict[str, Any]] | None:
    # Records are written with their id first, so most are ruled out without parsing them.
    prefix = json.dumps({"id": record_id})[:-1].encode()
    for raw in app.backend.client.lrange(key, 0, -1):
        if raw.startswith(prefix):
            record = json.loads(raw)
            if record.get("id") == record_id:
                return raw, record
    return None


def _publish(app: Celery, record: dict[str, Any]) -> str | None:
    queue = record.get("queue")
    if not queue:
        raise NotReplayable("the record names no queue")
    if record.get("content_type") is not None:
        # The message as it came, byte for byte: a body that was not JSON goes back as it was
        # (and is dead-lettered again if nothing changed).
        properties = record.get("properties") or {}
        with app.producer_or_acquire() as producer:
            destination = _destination(app, queue, record.get("exchange"))
            # Declared first: a message published to an exchange with no binding is dropped,
            # and the queue may be one no worker in this broker's life has declared.
            destination(producer.channel).declare()
            producer.publish(
                raw_body(record.get("body")),
                exchange=destination.exchange,
                routing_key=destination.routing_key,
                serializer=None,
                content_type=record["content_type"],
                content_encoding=record.get("content_encoding") or "binary",
                headers=record.get("headers") or {},
                retry=True,
                retry_policy=PUBLISH_RETRY,
                **properties,
            )
        task_id = (record.get("headers") or {}).get("id")
        return str(task_id) if task_id else None
    body = record.get("body")
    task = record.get("task")
    if not task or not isinstance(body, dict) or not isinstance(body.get("args"), list):
        raise NotReplayable("the record holds neither a message nor a task's arguments")
    # A task that failed in its worker was recorded by its arguments: Celery builds the message
    # again, as a new task. Its first run ended (its failure is stored, and its execution lease
    # marks the id done), so under the same id the copy would be dropped as a duplicate.
    sent = app.send_task(
        task, args=body["args"], kwargs=body.get("kwargs") or {}, queue=queue,
        routing_key=queue, retry=True, retry_policy=PUBLISH_RETRY,
    )  # fmt: skip
    return str(sent.id)


def _destination(app: Celery, queue: str, exchange: str | None) -> Queue:
    # A queue the app knows is published to as Celery would; another one gets Chordal's
    # layout: a direct exchange of its own name.
    known = app.amqp.queues.get(queue)
    if known is not None:
        return known
    own = Exchange(exchange or queue, type="direct")
    return Queue(queue, own, routing_key=queue)


def printable(body: Any) -> Any:
    """``body`` as JSON can hold it: text as is, other bytes as ``{"base64": ...}``."""
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode("ascii")}
    return body


def raw_body(kept: Any) -> bytes:
    """The bytes :func:`printable` kept."""
    if isinstance(kept, dict) and set(kept) == {"base64"}:
        return base64.b64decode(kept["base64"])
    if isinstance(kept, str):
        return kept.encode("utf-8")
    return json.dumps(kept).encode("utf-8")


class DeadLetterConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, recording undecodable, unknown and invalid messages before dropping.

    Celery's own handling (ack or reject, and for an unknown task, failing its id) runs only
    once the record is written.
    """

    def _kept(self, message: Any, reason: str) -> bool:
        headers = message.headers or {}
        try:
            record_dead_letter(
                self.app,
                reason=reason,
                queue=(message.delivery_info or {}).get("routing_key"),
                task=headers.get("task"),
                task_id=headers.get("id"),
                headers=headers,
                body=message.body,
                message=message_fields(message),
            )
        except BrokerUnavailable as exc:
            logger.error("%s; message given back to its queue: %s", exc, reason)
            self.give_back_later(message)
            return False
        return True

    def give_back_later(self, message: Any) -> None:
        """Requeue ``message`` after :data:`REDELIVER_PAUSE_S`, unacknowledged meanwhile.

        Rejected with requeue rather than held: a held message would hold a prefetch slot (with
        a prefetch of 1 on the router, a few of them stop it) until the visibility timeout, an
        hour. Requeued at once, a worker would spin on it while Redis is down; the pause bounds
        that to one attempt per second, and the event loop's timer keeps it from blocking the
        consumer. On Redis a requeued message goes to the back of its queue.
        """
        hub = getattr(self, "hub", None)
        if hub is not None:
            hub.call_later(REDELIVER_PAUSE_S, self._give_back, message)
            return
        # No event loop: the timer would run in its own thread, and channels are not
        # thread-safe, so pause here (this consumer only) instead.
        time.sleep(REDELIVER_PAUSE_S)
        self._give_back(message)

    def _give_back(self, message: Any) -> None:
        if not message.acknowledged:
            message.reject_log_error(logger, self.connection_errors, requeue=True)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """The body is not JSON (or a content type Chordal does not accept)."""
        if self._kept(message, f"cannot decode ({message.content_type}): {exc}"):
            super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """The message is not a Celery task message."""
        if self._kept(message, "not a task message"):
            super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """The message names a task no worker registers."""
        if self._kept(message, f"unknown task: {exc}"):
            super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        """The task message is malformed (bad headers, bad arguments encoding)."""
        if self._kept(message, f"invalid task message: {exc}"):
            super().on_invalid_task(body, message, exc)
