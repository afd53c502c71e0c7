"""The dead-letter list: messages no worker could process, kept for inspection and replay.

Celery acknowledges or rejects such messages and only logs them, so they are gone. Chordal's
consumer records each one first (raw body, headers, queue, reason) on a Redis list in the result
backend, named by ``CHORDAL_DEAD_LETTER_KEY``; the worker then carries on with the next message.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer

from workers.settings import get_settings

logger = logging.getLogger(__name__)


def dead_letter(
    app: Celery,
    *,
    reason: str,
    queue: str | None,
    body: Any,
    task: str | None = None,
    task_id: str | None = None,
    headers: Any = None,
) -> None:
    """Push one record onto the dead-letter list; logs, never raises, if Redis is unreachable."""
    record = {
        "reason": reason,
        "queue": queue,
        "task": task,
        "task_id": task_id,
        "headers": headers,
        "body": _printable(body),
        "at": time.time(),
    }
    try:
        app.backend.client.lpush(get_settings().dead_letter_key, json.dumps(record, default=repr))
    except Exception:
        logger.exception("could not dead-letter a message: %s", record)


def read_dead_letters(app: Celery, *, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` dead-letter records, newest first."""
    raw = app.backend.client.lrange(get_settings().dead_letter_key, 0, limit - 1)
    return [json.loads(item) for item in raw]


def _printable(body: Any) -> Any:
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode("ascii")}
    return body


class DeadLetterConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, recording undecodable, unknown and invalid messages before dropping."""

    def _record(self, message: Any, reason: str, *, body: Any = None) -> None:
        info = message.delivery_info or {}
        headers = message.headers or {}
        dead_letter(
            self.app,
            reason=reason,
            queue=info.get("routing_key"),
            task=headers.get("task"),
            task_id=headers.get("id"),
            headers=headers,
            body=message.body if body is None else body,
        )

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """The body is not JSON (or a content type Chordal does not accept)."""
        self._record(message, f"cannot decode ({message.content_type}): {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """The message is not a Celery task message."""
        self._record(message, "not a task message", body=body)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """The message names a task no worker registers."""
        self._record(message, f"unknown task: {exc}", body=body)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        """The task message is malformed (bad headers, bad arguments encoding)."""
        self._record(message, f"invalid task message: {exc}", body=body)
        super().on_invalid_task(body, message, exc)
