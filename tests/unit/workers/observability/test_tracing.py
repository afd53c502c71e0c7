"""Tracing: off by default, GenAI spans over OTLP, one trace from submit to the aggregator."""

from __future__ import annotations

import asyncio
import gc
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery, _state, chord, signals
from celery.contrib.testing.worker import start_worker
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chordal.broker import EmbeddedBroker
from routing.decision import CandidateScore, RoutingDecision
from tests.support_otlp import OtlpReceiver, ReceivedSpan
from workers.errors import AgentFailed, ConfigurationError, RateLimited
from workers.execution import EventLoopThread
from workers.observability import tracing
from workers.tiers import Tier

PROMPT = "my card number is 4111 1111 1111 1111"
SERVICE = "chordal-test"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


@pytest.fixture
def otlp(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> OtlpReceiver:
    """The receiver, emptied, with the environment pointing the exporter at it."""
    receiver.clear()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    # Export every 50 ms rather than every 5 s.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    return receiver


def decision() -> RoutingDecision:
    candidate = CandidateScore(
        model="gpt-5-mini",
        tier=Tier.BALANCED,
        quality=0.8,
        expected_cost_usd=0.001,
        max_cost_usd=0.002,
        expected_latency_s=1.0,
        score=0.9,
    )
    return RoutingDecision(
        model="gpt-5-mini",
        tier=Tier.BALANCED,
        task_kind="general",
        complexity=0.4,
        prompt_tokens=12,
        max_output_tokens=256,
        expected_cost_usd=0.001,
        max_cost_usd=0.002,
        reason="best score",
        candidates=[candidate, candidate.model_copy(update={"model": "gemini-2.5-flash"})],
        notes=["skipped (circuit breaker open): gpt-5"],
    )


class Worker:
    """Stands in for the WorkController that sends worker_init (signal senders must hash)."""

    def __init__(self, pool_cls: str) -> None:
        self.pool_cls = pool_cls


def named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span["name"] == name]


def test_setup_is_a_no_op_without_otel_env() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    assert tracing.setup_tracing(service_name=SERVICE) is False
    assert not CeleryInstrumentor().is_instrumented_by_opentelemetry  # type: ignore[no-untyped-call]
    with tracing.llm_span("gpt-5", provider="openai") as span:
        assert not span.is_recording()


@pytest.mark.parametrize(
    ("env", "configured"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_only_the_standard_variables_turn_tracing_on(env: dict[str, str], configured: bool) -> None:
    assert tracing.tracing_configured(env) is configured


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_unsupported_exporters_fail_with_a_sentence(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="not supported"):
        tracing.tracing_configured(env)


def test_routing_and_llm_spans_reach_the_collector(otlp: OtlpReceiver) -> None:
    # Given tracing configured by OTEL_EXPORTER_OTLP_ENDPOINT alone
    assert tracing.setup_tracing(service_name=SERVICE) is True

    # When a job routes and calls a model, and a second call fails quoting the prompt
    with tracing.routing_span("summarizer") as route:
        tracing.record_route(route, decision())
    with tracing.llm_span("gemini-2.5-flash", provider="gemini", max_tokens=256) as call:
        tracing.record_llm_response(
            call,
            input_tokens=12,
            output_tokens=34,
            finish_reasons="stop",
            response_model="gemini-2.5-flash-001",
            cost_usd=0.0012,
        )
    with (
        pytest.raises(AgentFailed),
        tracing.llm_span("mistral-small-latest", provider="mistral", max_tokens=64),
    ):
        raise AgentFailed(f"provider rejected the request: {PROMPT}")

    # Then the collector gets all three, with the GenAI attributes and no prompt text
    spans = otlp.wait_for(lambda spans: len(spans) >= 3)
    (routing,) = named(spans, "chordal.routing")
    assert routing["service_name"] == SERVICE
    assert routing["resource"]["deployment.environment"] == "test"
    assert routing["attributes"] == {
        "chordal.job.agent": "summarizer",
        "chordal.route.model": "gpt-5-mini",
        "chordal.route.tier": "balanced",
        "chordal.route.complexity": 0.4,
        "chordal.route.candidates": 2,
        "chordal.route.notes": 1,
    }
    (chat,) = named(spans, "chat gemini-2.5-flash")
    assert chat["kind"] == "CLIENT"
    assert chat["attributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "gcp.gemini",
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gemini-2.5-flash",
        "gen_ai.request.max_tokens": 256,
        "gen_ai.response.model": "gemini-2.5-flash-001",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 34,
        "gen_ai.response.finish_reasons": ["stop"],
        "chordal.cost_usd": 0.0012,
    }
    (failed,) = named(spans, "chat mistral-small-latest")
    assert failed["status"] == "ERROR"
    assert failed["attributes"]["gen_ai.system"] == "mistral_ai"
    assert failed["attributes"]["error.type"] == "workers.errors.AgentFailed"
    assert "4111" not in repr(spans)


def test_an_error_in_an_llm_call_marks_the_span_without_its_message() -> None:
    exporter = InMemorySpanExporter()
    tracing.setup_tracing(service_name=SERVICE, span_exporter=exporter)

    with pytest.raises(RateLimited), tracing.llm_span("gpt-5", provider="openai"):
        raise RateLimited(f"429 for {PROMPT}", 3.0)

    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "workers.errors.RateLimited"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "workers.errors.RateLimited"
    assert "gen_ai.request.max_tokens" not in span.attributes
    assert span.events == ()


def test_setup_is_idempotent() -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    assert tracing.setup_tracing(service_name=SERVICE, span_exporter=first)
    assert tracing.setup_tracing(service_name="other", span_exporter=second)

    with tracing.routing_span("summarizer"):
        pass

    assert [span.name for span in first.get_finished_spans()] == ["chordal.routing"]
    assert second.get_finished_spans() == ()


def test_llm_calls_on_the_shared_loop_stay_under_the_task_span() -> None:
    # Given the worker's event-loop thread, which runs every LLM call of a process
    exporter = InMemorySpanExporter()
    tracing.setup_tracing(service_name=SERVICE, span_exporter=exporter)
    loop = EventLoopThread(name="tracing-test-loop")

    async def call() -> None:
        with tracing.llm_span("gpt-5", provider="openai"):
            await asyncio.sleep(0)

    # When a task's thread hands it a call inside the task's span
    try:
        with tracing.routing_span("summarizer") as task:
            loop.run(call(), timeout=5)
    finally:
        loop.stop()

    # Then the call's span is the task span's child (run_coroutine_threadsafe copies context)
    chat, _ = exporter.get_finished_spans()
    assert chat.parent is not None
    assert chat.parent.span_id == task.get_span_context().span_id


def test_worker_signals_set_tracing_up_where_each_pool_runs_tasks(otlp: OtlpReceiver) -> None:
    def recording() -> bool:
        with tracing.routing_span("probe") as span:
            return span.is_recording()

    tracing.connect_worker_signals(service_name=SERVICE)
    try:
        # A prefork parent waits for its children...
        signals.worker_init.send(sender=Worker("prefork"))
        assert not recording()
        signals.worker_process_init.send(sender="child@host")
        assert recording()
        signals.worker_process_shutdown.send(sender="child@host", pid=1, exitcode=0)
        assert not recording()
        # ...while a threads (or gevent) pool runs tasks in the process worker_init reaches.
        signals.worker_init.send(sender=Worker("threads"))
        assert recording()
    finally:
        for signal in (
            signals.worker_init,
            signals.worker_process_init,
            signals.worker_process_shutdown,
            signals.worker_shutdown,
        ):
            signal.disconnect(dispatch_uid="chordal.tracing")


@pytest.fixture
def celery_app(valkey: EmbeddedBroker, connect: Callable[[], Any]) -> Iterator[Celery]:
    """A tiny team: a router task replaced by an agent task, inside a chord, then an aggregator."""
    previous_default, previous_current = _state.default_app, _state.get_current_app()
    app = Celery("tracing-test", broker=valkey.url, backend=valkey.url, set_as_current=False)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_default_queue=f"tracing-{uuid.uuid4().hex[:8]}",
    )

    @app.task(bind=True, name="test.team")  # type: ignore[untyped-decorator]
    def team(self: Any, size: int) -> Any:
        return self.replace(chord([route.s(index) for index in range(size)], aggregate.s()))

    @app.task(bind=True, name="test.route")  # type: ignore[untyped-decorator]
    def route(self: Any, index: int) -> Any:
        with tracing.routing_span("member") as span:
            tracing.record_route(span, decision())
        return self.replace(agent.s(index))

    @app.task(name="test.agent")  # type: ignore[untyped-decorator]
    def agent(index: int) -> int:
        with tracing.llm_span("gpt-5-mini", provider="openai", max_tokens=16) as span:
            tracing.record_llm_response(span, input_tokens=5, output_tokens=index + 1)
        return index

    @app.task(name="test.aggregate")  # type: ignore[untyped-decorator]
    def aggregate(results: list[int]) -> int:
        return sum(results)

    yield app
    # The Redis backend keeps every pending result (the in-thread worker's chord results too)
    # and unsubscribes each one when it is collected. Collect them while the server still
    # runs; their pubsub connections are garbage as well, closed here, not leaked.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    app.close()
    _state.set_default_app(previous_default)
    _state._set_current_app(previous_current)


def test_a_team_job_is_one_trace_from_submit_to_aggregator(
    otlp: OtlpReceiver, celery_app: Celery
) -> None:
    # Given an instrumented producer and worker (one process here; headers carry the context)
    assert tracing.setup_tracing(service_name=SERVICE)
    members = 3

    # When the producer submits by name inside a submit span
    with start_worker(celery_app, perform_ping_check=False, shutdown_timeout=10):
        with tracing.submit_span("team", "test.team") as submit:
            result = celery_app.send_task("test.team", args=[members])
        assert trace.get_current_span() is not submit
        # The aggregator's span ends after it stored the result. (Polling, not result.get():
        # get() subscribes on the backend, and results collected later unsubscribe from a
        # server already gone.)
        spans = otlp.wait_for(lambda spans: bool(named(spans, "run/test.aggregate")))
        assert result.state == "SUCCESS"
        assert result.result == sum(range(members))

    # Then every span, through Task.replace and the chord callback, is in the submit's trace
    by_id = {span["span_id"]: span for span in spans}
    (root,) = named(spans, "chordal.submit")
    assert root["kind"] == "PRODUCER"
    assert root["parent_span_id"] == ""
    assert {span["trace_id"] for span in spans} == {root["trace_id"]}
    orphans = [s["name"] for s in spans if s is not root and s["parent_span_id"] not in by_id]
    assert orphans == []

    def parent(span: ReceivedSpan) -> str:
        return by_id[span["parent_span_id"]]["name"]

    assert len(named(spans, "run/test.route")) == members
    assert len(named(spans, "chordal.routing")) == members
    assert [parent(span) for span in named(spans, "run/test.agent")] == [
        "apply_async/test.agent"
    ] * members
    assert [parent(span) for span in named(spans, "chat gpt-5-mini")] == [
        "run/test.agent"
    ] * members
    # The result backend publishes the aggregator from the last member's run.
    (aggregator,) = named(spans, "run/test.aggregate")
    assert parent(by_id[aggregator["parent_span_id"]]) == "run/test.agent"
