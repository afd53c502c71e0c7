"""OpenTelemetry tracing: Celery instrumentation, routing and LLM-call spans, OTLP export.

Tracing is off unless the standard ``OTEL_*`` variables ask for it, so a default run pays
nothing: :func:`setup_tracing` returns False and every span helper here hands out a no-op
span. When enabled, one trace covers a job end to end::

    chordal.submit (producer)                 submit_span() around send_task
    └── apply_async/chordal.route             Celery instrumentation, traceparent in headers
        └── run/chordal.route (router worker)
            ├── chordal.routing               routing_span() + record_route()
            └── apply_async/chordal.agent     Task.replace publishes from inside the run span
                └── run/chordal.agent
                    └── chat gpt-5-mini       llm_span() + record_llm_response()

A team's chord members are published the same way; the chord callback (the aggregator) is
published by the result backend while the last member's run span is current, so it joins the
same trace. An LLM call handed to the worker's shared event loop (``workers.execution``) stays
under its task's span: ``asyncio.run_coroutine_threadsafe`` copies the caller's context.

Spans never hold prompts, outputs or exception messages (providers quote the request in them):
Chordal's own spans record an exception by its type only, and every exporter set up here is
wrapped in a :class:`~workers.observability.scrubbing.ScrubbingExporter`, which strips the
messages and stack traces the SDK and the Celery instrumentation record.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from workers.errors import ConfigurationError
from workers.observability.scrubbing import ScrubbingExporter

TRACER_NAME = "chordal"
WORKER_SERVICE = "chordal-worker"

# GenAI semantic-convention provider values by LiteLLM provider name. ``gen_ai.system`` is the
# attribute most backends read today; ``gen_ai.provider.name`` replaces it in newer releases of
# the conventions, and the two spell Azure and xAI differently.
_GEN_AI_SYSTEM = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "anthropic": "anthropic",
    "mistral": "mistral_ai",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "bedrock": "aws.bedrock",
    "azure": "az.ai.openai",
    "azure_ai": "az.ai.inference",
    "groq": "groq",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "xai": "xai",
    "watsonx": "ibm.watsonx.ai",
}
_GEN_AI_PROVIDER_NAME = {
    "az.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "xai": "x_ai",
}

_OTLP_EXPORTERS = frozenset({"otlp", "otlp_proto_http"})
_HTTP_PROTOBUF = "http/protobuf"
_DISPATCH_UID = "chordal.tracing"


class RouteSummary(Protocol):
    """What :func:`record_route` reads from a routing decision (``RoutingDecision`` fits)."""

    @property
    def model(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def complexity(self) -> float: ...
    @property
    def candidates(self) -> Sized: ...
    @property
    def notes(self) -> Sized: ...


class _State:
    """This process's tracing set-up; empty while tracing is off."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.provider: TracerProvider | None = None
        self.tracer: Tracer | None = None
        # The global provider was ours and is shut down: hand out no-op spans, not dead ones.
        self.global_retired = False


_state = _State()


def tracing_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the standard ``OTEL_*`` variables ask for traces to be exported."""
    return bool(_configured_exporters(os.environ if environ is None else environ))


def setup_tracing(*, service_name: str, span_exporter: SpanExporter | None = None) -> bool:
    """Start tracing in this process if configured; returns whether tracing is on.

    Idempotent: later calls return True without changing anything. ``service_name`` becomes
    the resource's ``service.name``; as everywhere in the SDK, the value given in code wins
    over ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``, whose other attributes are
    kept. ``span_exporter`` replaces the exporters the environment names and exports each span
    as it ends (tests use it with an in-memory exporter).

    The first provider built becomes OpenTelemetry's global one, which can be set only once
    per process; Chordal's spans and the Celery instrumentation use the current provider
    directly, so set-up can run again after :func:`shutdown_tracing` (tests rely on that).
    """
    with _state.lock:
        if _state.provider is not None:
            return True
        if span_exporter is not None:
            processors: list[SpanProcessor] = [
                SimpleSpanProcessor(ScrubbingExporter(span_exporter))
            ]
        else:
            # Chordal's own settings come from workers.settings only; OTEL_* are the
            # OpenTelemetry SDK's convention, read here and by the SDK and exporter themselves.
            processors = [
                BatchSpanProcessor(ScrubbingExporter(_exporter(name)))
                for name in _configured_exporters(os.environ)
            ]
            if not processors:
                return False
        # Resource.create merges in OTEL_RESOURCE_ATTRIBUTES; the provider reads
        # OTEL_TRACES_SAMPLER(_ARG) and the batch processor OTEL_BSP_* themselves.
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        for processor in processors:
            provider.add_span_processor(processor)
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        _instrumentor().instrument(tracer_provider=provider)
        _state.provider = provider
        _state.tracer = provider.get_tracer(TRACER_NAME)
        return True


def shutdown_tracing(*, timeout_s: float = 10.0) -> None:
    """Export every finished span, stop the exporters and remove the Celery instrumentation.

    Call it when a worker (or worker process) stops: prefork children leave with ``os._exit``,
    which skips the SDK's own exit hook. A no-op when tracing is off.
    """
    with _state.lock:
        provider = _state.provider
        if provider is None:
            return
        _instrumentor().uninstrument()
        provider.force_flush(timeout_millis=int(timeout_s * 1000))
        provider.shutdown()
        if trace.get_tracer_provider() is provider:
            _state.global_retired = True
        _state.provider = None
        _state.tracer = None


def connect_worker_signals(*, service_name: str = WORKER_SERVICE) -> None:
    """Set tracing up where each worker pool runs tasks and flush it when the worker stops.

    ``worker_process_init`` fires only in prefork children and the solo pool; gevent, eventlet
    and threads pools run tasks in the main process, which only ``worker_init`` reaches. A
    prefork parent is skipped so no exporter connection is opened before the fork.
    """
    from celery import signals

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if not _is_prefork(getattr(sender, "pool_cls", None)):
            setup_tracing(service_name=service_name)

    def on_process_init(**_: Any) -> None:
        setup_tracing(service_name=service_name)

    def on_shutdown(**_: Any) -> None:
        shutdown_tracing()

    signals.worker_init.connect(on_worker_init, weak=False, dispatch_uid=_DISPATCH_UID)
    signals.worker_process_init.connect(on_process_init, weak=False, dispatch_uid=_DISPATCH_UID)
    signals.worker_process_shutdown.connect(on_shutdown, weak=False, dispatch_uid=_DISPATCH_UID)
    signals.worker_shutdown.connect(on_shutdown, weak=False, dispatch_uid=_DISPATCH_UID)


@contextmanager
def submit_span(job_kind: str, target: str, *, job_id: str | None = None) -> Iterator[Span]:
    """A ``chordal.submit`` PRODUCER span to wrap ``send_task``: the root of the job's trace.

    ``job_kind`` is ``agent`` or ``team``; ``target`` the agent or team name.
    """
    attributes: dict[str, str] = {"chordal.job.kind": job_kind, "chordal.job.target": target}
    if job_id is not None:
        attributes["messaging.message.id"] = job_id
    with _span("chordal.submit", attributes, kind=SpanKind.PRODUCER) as span:
        yield span


@contextmanager
def routing_span(agent: str) -> Iterator[Span]:
    """A ``chordal.routing`` span around choosing a model; finish it with :func:`record_route`."""
    with _span("chordal.routing", {"chordal.job.agent": agent}) as span:
        yield span


def record_route(span: Span, decision: RouteSummary) -> None:
    """Put what the router chose on ``span`` (counts only: notes may quote provider errors)."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "chordal.route.model": decision.model,
            "chordal.route.tier": str(decision.tier),
            "chordal.route.complexity": float(decision.complexity),
            "chordal.route.candidates": len(decision.candidates),
            "chordal.route.notes": len(decision.notes),
        }
    )


def gen_ai_system(provider: str) -> str:
    """The GenAI semantic-convention ``gen_ai.system`` value for a LiteLLM provider name."""
    if provider.startswith("vertex_ai"):
        return "gcp.vertex_ai"
    return _GEN_AI_SYSTEM.get(provider, provider)


@contextmanager
def llm_span(model: str, *, provider: str, max_tokens: int | None = None) -> Iterator[Span]:
    """A CLIENT span ``chat {model}`` around one LLM call, with GenAI request attributes.

    Finish it with :func:`record_llm_response`. An exception leaving the block sets status
    ERROR and ``error.type`` (the class, never the message) and propagates.
    """
    system = gen_ai_system(provider)
    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": system,
        "gen_ai.provider.name": _GEN_AI_PROVIDER_NAME.get(system, system),
        "gen_ai.request.model": model,
    }
    if max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    with _span(f"chat {model}", attributes, kind=SpanKind.CLIENT) as span:
        yield span


@contextmanager
def _span(
    name: str, attributes: Mapping[str, str | int], *, kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span]:
    # The SDK's defaults would copy the exception message into the span, and a tracer provider
    # the host application set up has exporters Chordal does not wrap: an exception marks the
    # span ERROR with the exception's type only.
    with _tracer().start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            error_type = _error_type(exc)
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
            raise


def record_llm_response(
    span: Span,
    *,
    input_tokens: int,
    output_tokens: int,
    finish_reasons: str | Sequence[str] | None = None,
    response_model: str | None = None,
    cost_usd: float | None = None,
) -> None:
    """Put the call's usage, finish reasons, answering model and cost on ``span``."""
    if not span.is_recording():
        return
    attributes: dict[str, str | int | float | Sequence[str]] = {
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
    }
    if finish_reasons is not None:
        reasons = [finish_reasons] if isinstance(finish_reasons, str) else list(finish_reasons)
        attributes["gen_ai.response.finish_reasons"] = reasons
    if response_model is not None:
        attributes["gen_ai.response.model"] = response_model
    if cost_usd is not None:
        attributes["chordal.cost_usd"] = cost_usd
    span.set_attributes(attributes)


def _tracer() -> Tracer:
    if _state.tracer is not None:
        return _state.tracer
    if _state.global_retired:
        return trace.NoOpTracer()
    # Before set-up (or with tracing off) the global API hands out a no-op proxy tracer, or
    # the tracer of a provider the host application installed.
    return trace.get_tracer(TRACER_NAME)


def _configured_exporters(environ: Mapping[str, str]) -> list[str]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = environ.get("OTEL_TRACES_EXPORTER", "otlp")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    if "none" in names:
        return []
    has_endpoint = bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    exporters: list[str] = []
    for name in names:
        if name in _OTLP_EXPORTERS:
            # The SDK would default to localhost:4318; Chordal exports only when told where.
            if has_endpoint:
                _check_protocol(environ)
                exporters.append("otlp")
        elif name == "console":
            exporters.append("console")
        else:
            msg = f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none"
            raise ConfigurationError(msg)
    return exporters


def _check_protocol(environ: Mapping[str, str]) -> None:
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", _HTTP_PROTOBUF
    )
    if protocol.strip().lower() != _HTTP_PROTOBUF:
        msg = (
            f"OTLP protocol {protocol!r} is not supported: Chordal exports OTLP over "
            f"{_HTTP_PROTOBUF}; point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port "
            "(usually 4318) and unset OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        raise ConfigurationError(msg)


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    # Imported only when used: it pulls in requests and protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE.
    return OTLPSpanExporter()


def _instrumentor() -> Any:
    # Imported lazily: importing it imports Celery's worker internals. A singleton: every call
    # returns the same instrumentor. Its base module opts out of type checking, hence Any.
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    return CeleryInstrumentor()  # type: ignore[no-untyped-call]


def _is_prefork(pool_cls: object) -> bool:
    # The pool is still the name (or the class) from the command line when worker_init fires.
    name = pool_cls if isinstance(pool_cls, str) else getattr(pool_cls, "__module__", "")
    return name in {"prefork", "processes"} or str(name).endswith(".prefork")


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
