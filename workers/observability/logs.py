"""Structured logs: one redacted JSON object per line, with job, task, tenant and trace context.

Every record is redacted (:mod:`workers.observability.redaction`) before any handler writes it;
prompts and outputs appear only as previews unless ``log_prompts`` is on. The Celery hooks,
connected in :mod:`workers.app`:

- ``setup_logging`` -> ``configure_logging(...)`` (a receiver also stops Celery installing its
  own handlers);
- ``task_prerun`` -> ``bind_task_context(task_id, task.request.root_id, task_name=task.name,
  tenant=job_tenant(args, kwargs))``; ``task_postrun`` -> ``clear_task_context()``;
- the app's AMQP class sets ``argsrepr``/``kwargsrepr`` from :func:`task_argsrepr`: what worker
  logs, task events and Flower show of a task's arguments;
- ``Task.Request = "workers.observability.logs:RedactingRequest"``: what task events (Flower)
  show of results.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from celery.worker.request import Request

from workers.handoff import is_hand_off_success
from workers.observability.redaction import preview, redact, redact_value, secret_placeholder

try:
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - OpenTelemetry is optional for logging
    otel_trace = None  # type: ignore[assignment]

__all__ = [
    "JsonFormatter",
    "PlainFormatter",
    "RedactingFilter",
    "RedactingRequest",
    "TaskLogFilter",
    "bind",
    "bind_task_context",
    "clear",
    "clear_task_context",
    "configure_logging",
    "current_context",
    "job_tenant",
    "log_context",
    "task_argsrepr",
    "trace_ids",
]

#: The context fields, in the order they appear in a JSON line.
CONTEXT_FIELDS = ("job_id", "task_id", "tenant", "task")
#: How many characters of a prompt or output a log line or task event shows by default.
PREVIEW_CHARS = 80
#: Without log_prompts, longer messages are cut: a backstop against a long prompt or a Celery
#: message-body dump landing in the logs whole.
MAX_MESSAGE_CHARS = 1000
#: Celery's own cap on argsrepr/kwargsrepr.
MAX_REPR_CHARS = 1024
#: Fields of a job payload (or result) that hold prompt or output text: shown as previews.
TEXT_FIELDS = frozenset(
    {"input", "output", "prompt", "completion", "content", "text", "answer", "response"}
)
#: Loggers whose records carry Celery's task context dict (return value, args, exception).
CELERY_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")
#: Celery loggers that get handlers of their own when Celery sets up logging itself.
CELERY_HANDLER_LOGGERS = ("celery", "celery.task", "celery.redirected")


_REDACTED = "chordal_redacted"  # set on a record once its message and exception are redacted
_CONTEXT: ContextVar[Mapping[str, str] | None] = ContextVar("chordal_log_context", default=None)


@dataclass
class _Policy:
    log_prompts: bool = False
    preview_chars: int = PREVIEW_CHARS


_policy = _Policy()  # what configure_logging chose; read by RedactingRequest


def bind(**fields: str | None) -> Token[Mapping[str, str] | None]:
    """Add ``fields`` (None values skipped) to this context's log fields; returns a reset token."""
    merged = dict(_CONTEXT.get() or {})
    merged.update({key: str(value) for key, value in fields.items() if value is not None})
    return _CONTEXT.set(merged)


def clear() -> None:
    """Drop every log field bound in this context."""
    _CONTEXT.set(None)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Bind ``fields`` (``job_id``, ``tenant``, ``task_id``, ``task``...) inside the block."""
    token = bind(**fields)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_task_context(
    task_id: str, root_id: str | None, *, task_name: str, tenant: str | None = None
) -> None:
    """Bind a Celery task's fields (from ``task_prerun``); the job id is the canvas' root id."""
    clear()
    bind(job_id=root_id or task_id, task_id=task_id, task=task_name, tenant=tenant)


def clear_task_context() -> None:
    """Forget the task's fields (from ``task_postrun``), so the next task starts clean."""
    clear()


def job_tenant(args: Any, kwargs: Any) -> str | None:
    """The tenant of the job a task was called with (a job dict in args or kwargs), if any."""
    values = [*(args or ()), *((kwargs or {}).values())]
    for value in values:
        if isinstance(value, Mapping) and isinstance(value.get("tenant"), str):
            return str(value["tenant"])
    return None


def trace_ids() -> tuple[str, str] | None:
    """The current OpenTelemetry span's trace and span ids (32 and 16 hex digits), or None."""
    if otel_trace is None:
        return None
    span_context = otel_trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


def current_context(record: logging.LogRecord | None = None) -> dict[str, str]:
    """The known context fields and trace ids; a record's own attributes (``extra=``) win."""
    bound = _CONTEXT.get() or {}
    fields: dict[str, str] = {}
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None) or bound.get(name)
        if value:
            fields[name] = str(value)
    ids = trace_ids()
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    return fields


class RedactingFilter(logging.Filter):
    """Redacts a record's message, exception and stack in place, for every handler after it.

    The message is formatted once (``msg % args``), redacted, and stored back with no args;
    with ``max_chars`` it is also cut to that many characters.
    """

    def __init__(self, *, max_chars: int | None = None) -> None:
        super().__init__()
        self.max_chars = max_chars

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record``; always keeps it."""
        if getattr(record, _REDACTED, False):
            return True
        message = redact(_message(record))
        if self.max_chars is not None and len(message) > self.max_chars:
            message = f"{message[: self.max_chars]}…({len(message)} chars)"
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, _REDACTED, True)
        return True


class TaskLogFilter(logging.Filter):
    """Rewrites the context dict Celery logs task lines with (the ``args`` and ``data`` of
    "Task ...[id] succeeded in 0.5s: <return value>", "received", "raised"...).

    Without ``log_prompts`` the return value, args and kwargs become previews; the exception and
    traceback are redacted either way. Installed on the loggers in CELERY_TASK_LOGGERS.
    """

    def __init__(self, *, log_prompts: bool, preview_chars: int = PREVIEW_CHARS) -> None:
        super().__init__()
        self.log_prompts = log_prompts
        self.preview_chars = preview_chars

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace ``record.args`` (and ``record.data``) with a rewritten copy; keeps it."""
        if isinstance(record.args, Mapping):
            rewritten = _task_fields(
                record.args, log_prompts=self.log_prompts, limit=self.preview_chars
            )
            record.args = rewritten
            if hasattr(record, "data"):  # the same dict, passed as extra= for custom handlers
                setattr(record, "data", rewritten)  # noqa: B010 - not a LogRecord attribute
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, context fields, trace ids, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line, redacted."""
        already = getattr(record, _REDACTED, False)
        message = _message(record)
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message if already else redact(message),
        }
        entry.update(current_context(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text if already else redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = record.stack_info if already else redact(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """Human-readable lines with the context fields in brackets, for development."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(chordal_context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as text; its message is expected to pass a RedactingFilter first."""
        fields = current_context(record)
        context = " ".join(f"{key}={value}" for key, value in fields.items())
        setattr(record, "chordal_context", f" [{context}]" if context else "")  # noqa: B010
        return super().format(record)


def configure_logging(
    *,
    level: str,
    json_logs: bool,
    log_prompts: bool,
    preview_chars: int = PREVIEW_CHARS,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record, Celery's included, through one redacting handler on the root.

    Replaces the root logger's handlers; empties the handlers Celery gives its own loggers and
    makes them propagate; puts a TaskLogFilter on Celery's task loggers so task results and
    arguments are previewed unless ``log_prompts``. Returns the handler installed.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else PlainFormatter())
    handler.addFilter(RedactingFilter(max_chars=None if log_prompts else MAX_MESSAGE_CHARS))
    root = logging.getLogger()
    root.setLevel(level.upper())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    for name in CELERY_HANDLER_LOGGERS:
        celery_logger = logging.getLogger(name)
        celery_logger.handlers.clear()
        celery_logger.propagate = True
    for name in CELERY_TASK_LOGGERS:
        task_logger = logging.getLogger(name)
        for old_filter in [f for f in task_logger.filters if isinstance(f, TaskLogFilter)]:
            task_logger.removeFilter(old_filter)
        task_logger.addFilter(TaskLogFilter(log_prompts=log_prompts, preview_chars=preview_chars))
    _policy.log_prompts, _policy.preview_chars = log_prompts, preview_chars
    return handler


def task_argsrepr(args: Any, kwargs: Any, *, limit: int = PREVIEW_CHARS) -> tuple[str, str]:
    """Redacted, shortened ``argsrepr`` and ``kwargsrepr`` for ``apply_async``: a job's
    ``input`` (and any output text) as a preview, its other fields kept but redacted."""
    return (
        _capped(repr(_shorten(tuple(args or ()), limit))),
        _capped(repr(_shorten(dict(kwargs or {}), limit))),
    )


class RedactingRequest(Request):  # type: ignore[misc]
    """A worker request whose task events (what Flower shows) carry a preview of the result and
    a redacted exception and traceback. Set ``Task.Request`` to
    ``workers.observability.logs:RedactingRequest``.
    """

    def send_event(self, event_type: str, **fields: Any) -> None:
        """Send the event with its result, exception and traceback redacted; a hand-off
        (:mod:`workers.handoff`) is not a success: its replacement reports the result."""
        if is_hand_off_success(event_type, fields):
            return
        super().send_event(
            event_type,
            **_task_fields(fields, log_prompts=_policy.log_prompts, limit=_policy.preview_chars),
        )


_FORMATTER = logging.Formatter()
_PREVIEWED_FIELDS = ("return_value", "result", "args", "kwargs")
_REDACTED_FIELDS = ("exc", "exception", "traceback")


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string must not raise out of a log call
        return f"{record.msg} {record.args!r}"


def _task_fields(fields: Mapping[str, Any], *, log_prompts: bool, limit: int) -> dict[str, Any]:
    rewritten = dict(fields)
    for key in _PREVIEWED_FIELDS:
        value = rewritten.get(key)
        if value is not None:
            text = value if isinstance(value, str) else repr(value)
            rewritten[key] = redact(text) if log_prompts else preview(text, limit=limit)
    for key in _REDACTED_FIELDS:
        value = rewritten.get(key)
        if isinstance(value, str):
            rewritten[key] = redact(value)
    return rewritten


def _shorten(value: Any, limit: int) -> Any:
    if isinstance(value, Mapping):
        return {key: _shorten_field(key, item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [_shorten(item, limit) for item in value]
    if isinstance(value, tuple):
        return tuple(_shorten(item, limit) for item in value)
    if isinstance(value, str):
        return preview(value, limit=max(limit, 200))
    return redact_value(value)


def _shorten_field(key: Any, value: Any, limit: int) -> Any:
    if isinstance(key, str) and isinstance(value, str):
        if key in TEXT_FIELDS:
            return preview(value, limit=limit)
        placeholder = secret_placeholder(key)
        if placeholder is not None and value:
            return placeholder
    return _shorten(value, limit)


def _capped(text: str) -> str:
    return text if len(text) <= MAX_REPR_CHARS else f"{text[:MAX_REPR_CHARS]}…"
