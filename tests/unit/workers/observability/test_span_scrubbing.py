"""Exported spans carry an exception's type, never its message or stack trace."""

from __future__ import annotations

import gc
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery, _state
from celery.contrib.testing.worker import start_worker
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from chordal.broker import EmbeddedBroker
from workers.observability import tracing
from workers.observability.scrubbing import ScrubbingExporter

SECRET = "provider said: secret body 4111 1111 1111 1111"


def assert_type_only(span: ReadableSpan, error_type: str) -> None:
    """``span`` failed with ``error_type``, and nothing in it quotes the exception's message."""
    seen = repr(
        (dict(span.attributes or {}), [(e.name, dict(e.attributes or {})) for e in span.events],
         span.status.description)
    )  # fmt: skip
    assert "secret body" not in seen
    assert "4111" not in seen
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == error_type
    assert (span.attributes or {})["error.type"] == error_type
    (event,) = span.events
    assert event.name == "exception"
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == error_type
    assert set(attributes) <= {"exception.type", "exception.escaped"}


def test_the_sdks_exception_event_and_status_are_exported_without_the_message() -> None:
    # Given a span recorded with the SDK's defaults, as any instrumentation does
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(exporter)))

    # When the code inside it raises an error quoting the provider
    with (
        pytest.raises(ValueError, match="secret body"),
        provider.get_tracer("test").start_as_current_span("call"),
    ):
        raise ValueError(SECRET)

    # Then the exported span names the type only
    (span,) = exporter.get_finished_spans()
    assert_type_only(span, "ValueError")
    provider.shutdown()


def test_a_span_without_an_exception_is_exported_as_it_is() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(exporter)))

    with provider.get_tracer("test").start_as_current_span("call", attributes={"a": "b"}) as live:
        live.add_event("note", {"k": "v"})

    (span,) = exporter.get_finished_spans()
    assert span.attributes == {"a": "b"}
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [("note", {"k": "v"})]
    assert span.status.status_code is StatusCode.UNSET
    provider.shutdown()


@pytest.fixture
def celery_app(valkey: EmbeddedBroker, connect: Callable[[], Any]) -> Iterator[Celery]:
    """An app with one task that fails quoting a provider's answer."""
    previous_default, previous_current = _state.default_app, _state.get_current_app()
    app = Celery("scrubbing-test", broker=valkey.url, backend=valkey.url, set_as_current=False)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_default_queue=f"scrubbing-{uuid.uuid4().hex[:8]}",
    )

    @app.task(name="test.fail")  # type: ignore[untyped-decorator]
    def fail() -> None:
        raise Exception(SECRET)

    yield app
    # Pending results unsubscribe when collected: collect them while the server still runs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    app.close()
    _state.set_default_app(previous_default)
    _state._set_current_app(previous_current)


def test_a_failed_celery_task_is_exported_with_its_exception_type_only(
    celery_app: Celery,
) -> None:
    # Given Chordal's tracing, with the Celery instrumentation on
    exporter = InMemorySpanExporter()
    assert tracing.setup_tracing(service_name="chordal-test", span_exporter=exporter)

    # When a task fails with an exception whose message quotes the provider
    with start_worker(celery_app, perform_ping_check=False, shutdown_timeout=10):
        celery_app.send_task("test.fail")
        deadline = time.monotonic() + 30
        while not (runs := [s for s in exporter.get_finished_spans() if s.name == "run/test.fail"]):
            assert time.monotonic() < deadline, "the task's span never came"
            time.sleep(0.05)

    # Then its run span, which the instrumentation marks with str(exc), names the type only
    assert_type_only(runs[0], "Exception")
