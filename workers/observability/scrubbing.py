"""Spans leave the process without exception messages: only the exception's type.

OpenTelemetry's SDK records an exception as a span event with ``exception.message`` (``str(exc)``)
and ``exception.stacktrace`` (the traceback, messages included), and the Celery instrumentation
also sets the span's status description to ``str(exc)`` when a task fails. A provider's error
quotes the provider's response, which may quote the prompt. :class:`ScrubbingExporter` wraps
every exporter Chordal sets up (:mod:`workers.observability.tracing`) and rewrites each span on
its way out: an ``exception`` event keeps its type only, the status description becomes that
type, the span gets ``error.type`` (the exception's class, e.g. ``workers.errors.RateLimited``:
Chordal's error kind), and ``celery.retry.reason`` (``str(reason)``) is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
ERROR_TYPE = "error.type"
# What an exception event may keep: its type, and whether it escaped the span.
KEPT_EXCEPTION_ATTRIBUTES = (EXCEPTION_TYPE, "exception.escaped")
# Attributes that hold str() of an exception or of another free-form reason.
DROPPED_ATTRIBUTES = frozenset({"celery.retry.reason"})


class ScrubbingExporter(SpanExporter):
    """An exporter that hands ``inner`` each span without exception messages."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Scrub ``spans``, then export them with ``inner``."""
        return self.inner.export([scrub(span) for span in spans])

    def shutdown(self) -> None:
        """Shut ``inner`` down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush ``inner``."""
        return self.inner.force_flush(timeout_millis)


def scrub(span: ReadableSpan) -> ReadableSpan:
    """``span`` without exception messages or stack traces; ``span`` itself if it has none."""
    attributes: Mapping[str, Any] = span.attributes or {}
    raised = [
        str(event.attributes[EXCEPTION_TYPE])
        for event in span.events
        if event.name == EXCEPTION_EVENT and event.attributes and EXCEPTION_TYPE in event.attributes
    ]
    error_type = str(attributes.get(ERROR_TYPE) or (raised[-1] if raised else "")) or None
    description = span.status.description
    safe = description is None or description in {error_type, *raised}
    has_events = any(event.name == EXCEPTION_EVENT for event in span.events)
    if safe and not has_events and DROPPED_ATTRIBUTES.isdisjoint(attributes):
        return span
    kept = {key: value for key, value in attributes.items() if key not in DROPPED_ATTRIBUTES}
    if error_type is not None:
        kept.setdefault(ERROR_TYPE, error_type)
    status = span.status if safe else Status(span.status.status_code, error_type)
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=kept,
        events=[_scrubbed(event) for event in span.events],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _scrubbed(event: Event) -> Event:
    if event.name != EXCEPTION_EVENT:
        return event
    attributes = event.attributes or {}
    kept = {key: attributes[key] for key in KEPT_EXCEPTION_ATTRIBUTES if key in attributes}
    return Event(EXCEPTION_EVENT, kept, timestamp=event.timestamp)
