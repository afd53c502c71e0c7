"""An in-process OTLP/HTTP trace receiver for tests: what an OpenTelemetry collector would see."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Self, TypedDict

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from chordal.lifecycle import Service

START_TIMEOUT_S = 10.0


class ReceivedSpan(TypedDict):
    """One exported span, reduced to what tests assert on."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    status: str
    service_name: str
    resource: dict[str, Any]
    attributes: dict[str, Any]


class OtlpReceiver(Service):
    """Accepts OTLP/HTTP protobuf exports at ``/v1/traces`` on a free loopback port.

    Set ``OTEL_EXPORTER_OTLP_ENDPOINT`` to :attr:`endpoint`; read back with :meth:`spans` or
    :meth:`wait_for`.
    """

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter adds ``/v1/traces``)."""
        if self._port is None:
            msg = "the receiver is not running"
            raise RuntimeError(msg)
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> Self:
        """Serve in a daemon thread; returns once the port is bound."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="otlp-receiver", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S) or self._port is None:
            msg = "the OTLP receiver did not start"
            raise RuntimeError(msg)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(START_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_S)
        loop.close()
        self._loop = self._thread = self._runner = None
        self._port = None

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        """Forget the spans received so far."""
        with self._lock:
            self._spans.clear()

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Block until ``predicate(spans)`` holds; returns the spans, or fails the test."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._spans)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = [span["name"] for span in self._spans]
                    msg = f"spans not received within {timeout} s; got {names}"
                    raise AssertionError(msg)
                self._changed.wait(remaining)
            return list(self._spans)

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self._port = int(self._runner.addresses[0][1])
        ready.set()
        loop.run_forever()

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        received: list[ReceivedSpan] = []
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                received.extend(_span(span, resource=resource) for span in scope_spans.spans)
        with self._changed:
            self._spans.extend(received)
            self._changed.notify_all()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


def _span(span: Span, *, resource: dict[str, Any]) -> ReceivedSpan:
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "name": span.name,
        "kind": Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        "status": Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        "service_name": str(resource.get("service.name", "")),
        "resource": resource,
        "attributes": _attributes(span.attributes),
    }


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind is None:
        return None
    return getattr(value, kind)
