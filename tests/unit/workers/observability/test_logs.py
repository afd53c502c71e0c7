"""Structured logs: JSON lines, bound context, redaction, Celery's task lines, trace ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from celery import signals
from celery.app import trace as celery_trace
from celery.worker.request import Request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from workers.observability import logs
from workers.observability.logs import (
    CELERY_HANDLER_LOGGERS,
    CELERY_TASK_LOGGERS,
    RedactingFilter,
    RedactingRequest,
    TaskLogFilter,
    bind_task_context,
    clear_task_context,
    configure_logging,
    job_tenant,
    log_context,
    task_argsrepr,
)

TASK_ID = "3f2b8c1e-9d4a-4e2b-8f1a-0c9d8e7f6a5b"
ROOT_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
OUTPUT = "Dear jane.doe@example.com, here is the full report you asked for. " + "Lorem ipsum " * 80

Configure = Callable[..., io.StringIO]


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Configure]:
    """configure_logging writing to a buffer; the root and Celery loggers restored afterwards."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    loggers = [logging.getLogger(n) for n in (*CELERY_HANDLER_LOGGERS, *CELERY_TASK_LOGGERS)]
    saved = [(lg, list(lg.handlers), list(lg.filters), lg.propagate) for lg in loggers]
    monkeypatch.setattr(logs, "_policy", logs._Policy())

    def create(*, json_logs: bool = True, log_prompts: bool = False, **kw: Any) -> io.StringIO:
        stream = io.StringIO()
        configure_logging(
            level="info", json_logs=json_logs, log_prompts=log_prompts, stream=stream, **kw
        )
        return stream

    yield create
    root.handlers[:], root.level = saved_root
    for logger, handlers, filters, propagate in saved:
        logger.handlers[:], logger.filters[:], logger.propagate = handlers, filters, propagate
    logs.clear()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_line(configure: Configure) -> None:
    stream = configure()
    log = logging.getLogger("chordal.test")

    log.info("first %s", "record")
    log.warning("multi\nline")

    first, second = lines(stream)
    assert first["message"] == "first record"
    assert first["level"] == "INFO"
    assert first["logger"] == "chordal.test"
    assert first["ts"].endswith("Z")
    assert datetime.fromisoformat(first["ts"]).utcoffset() is not None
    assert second["message"] == "multi\nline"
    assert "job_id" not in first


def test_context_fields_inside_a_bound_context_only(configure: Configure) -> None:
    stream = configure()
    log = logging.getLogger("chordal.test")

    with log_context(job_id="job-1", tenant="acme", task_id="t-1", task="agents.run"):
        log.info("inside")
        with log_context(task_id="t-2"):
            log.info("nested")
        log.info("extra= wins", extra={"tenant": "globex"})
    log.info("after")

    inside, nested, extra, after = lines(stream)
    assert {k: inside[k] for k in ("job_id", "tenant", "task_id", "task")} == {
        "job_id": "job-1",
        "tenant": "acme",
        "task_id": "t-1",
        "task": "agents.run",
    }
    assert (nested["job_id"], nested["task_id"]) == ("job-1", "t-2")
    assert (extra["tenant"], extra["task_id"]) == ("globex", "t-1")
    assert not {"job_id", "tenant", "task_id", "task"} & after.keys()


def test_task_context_from_signal_handlers(configure: Configure) -> None:
    stream = configure()
    log = logging.getLogger("chordal.test")

    bind_task_context(TASK_ID, ROOT_ID, task_name="agents.run", tenant="acme")
    log.info("running")
    clear_task_context()
    log.info("idle")
    bind_task_context(TASK_ID, None, task_name="agents.route")
    log.info("a root task")

    running, idle, root = lines(stream)
    assert running["job_id"] == ROOT_ID
    assert running["task_id"] == TASK_ID
    assert (running["task"], running["tenant"]) == ("agents.run", "acme")
    assert "job_id" not in idle
    assert "tenant" not in idle
    assert root["job_id"] == TASK_ID
    assert "tenant" not in root


def test_messages_and_exceptions_are_redacted(configure: Configure) -> None:
    stream = configure()
    log = logging.getLogger("chordal.test")

    log.info("user %s called from %s", "jane@example.com", "203.0.113.9")
    try:
        raise ValueError("card 4111 1111 1111 1111 declined for jane@example.com")
    except ValueError:
        log.exception("charge failed")

    info, error = lines(stream)
    assert info["message"] == "user [EMAIL] called from [IP]"
    assert error["message"] == "charge failed"
    assert "ValueError: card [CARD] declined for [EMAIL]" in error["exc"]
    assert "4111" not in stream.getvalue()
    assert "jane@" not in stream.getvalue()


def test_long_messages_are_cut_unless_prompts_are_logged(configure: Configure) -> None:
    prompt = "word " * 1000

    quiet = configure()
    logging.getLogger("chordal.test").info("prompt: %s", prompt)
    loud = configure(log_prompts=True)
    logging.getLogger("chordal.test").info("prompt: %s", prompt)

    assert lines(quiet)[0]["message"].endswith(f"…({len('prompt: ' + prompt)} chars)")
    assert lines(loud)[0]["message"] == f"prompt: {prompt}"


def _celery_success_record() -> logging.LogRecord:
    # What celery.app.trace's info(LOG_SUCCESS, context) builds: the context dict as the args
    # (LogRecord unwraps a lone mapping) and again as extra "data".
    context = {
        "id": TASK_ID,
        "name": "agents.run",
        "return_value": repr({"job_id": ROOT_ID, "output": OUTPUT}),
        "runtime": 0.51,
        "args": repr(({"input": "Write to jane.doe@example.com"},)),
        "kwargs": "{}",
    }
    name, msg = "celery.app.trace", celery_trace.LOG_SUCCESS
    record = logging.LogRecord(
        name, logging.INFO, celery_trace.__file__, 640, msg, (context,), None
    )
    record.__dict__["data"] = context
    return record


def test_celery_success_line_previews_the_output_unless_prompts_are_logged(
    configure: Configure,
) -> None:
    stream = configure()
    record = _celery_success_record()
    logging.getLogger("celery.app.trace").handle(record)
    loud = configure(log_prompts=True)
    logging.getLogger("celery.app.trace").handle(_celery_success_record())

    (line,) = lines(stream)
    assert line["message"].startswith(f"Task agents.run[{TASK_ID}] succeeded in 0.51s: {{")
    assert "[EMAIL]" in line["message"]
    assert "Lorem ipsum Lorem ipsum Lorem" not in line["message"]
    assert line["message"].endswith(" chars)")
    assert len(line["message"]) < 200
    assert "jane.doe" not in record.__dict__["data"]["args"]  # what custom handlers read
    (full,) = lines(loud)
    assert OUTPUT.replace("jane.doe@example.com", "[EMAIL]") in full["message"]


def test_celery_success_line_through_celerys_own_call(configure: Configure) -> None:
    stream = configure()

    celery_trace.info(
        celery_trace.LOG_SUCCESS,
        {"id": TASK_ID, "name": "agents.run", "return_value": repr(OUTPUT), "runtime": 1.2},
    )

    (line,) = lines(stream)
    assert line["logger"] == "celery.app.trace"
    assert OUTPUT not in line["message"]
    assert "[EMAIL]" in line["message"]


def test_celery_received_line_data_is_previewed(
    configure: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    configure()
    logger = logging.getLogger("celery.worker.strategy")
    context = {"id": TASK_ID, "name": "agents.run", "args": repr(OUTPUT), "kwargs": "{}"}
    logger.addHandler(caplog.handler)
    try:
        logger.info(celery_trace.LOG_RECEIVED, context, extra={"data": context})
    finally:
        logger.removeHandler(caplog.handler)

    (record,) = caplog.records
    assert record.getMessage() == f"Task agents.run[{TASK_ID}] received"
    assert record.__dict__["data"]["args"].endswith(f"…({len(repr(OUTPUT))} chars)")
    assert context["args"] == repr(OUTPUT)  # Celery's own dict is left as it was


def test_configure_twice_keeps_one_task_filter_and_propagates_celery_loggers(
    configure: Configure,
) -> None:
    logging.getLogger("celery.task").addHandler(logging.NullHandler())
    logging.getLogger("celery.task").propagate = False

    configure()
    configure()

    for name in CELERY_TASK_LOGGERS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, TaskLogFilter) for f in filters) == 1
    assert logging.getLogger("celery.task").handlers == []
    assert logging.getLogger("celery.task").propagate
    assert len(logging.getLogger().handlers) == 1


def test_redacting_filter_on_a_plain_formatter() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(max_chars=60))
    log = logging.getLogger("chordal.test.plain")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning(
            "key %s for %s", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7", "+44 20 7946 0958"
        )
        log.warning("bad format %d", "not a number")
        log.warning("x" * 100)
        try:
            raise RuntimeError("Authorization: Bearer abcdefghijklmnop123456")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True

    output = stream.getvalue()
    assert "WARNING key [API_KEY] for [PHONE]\n" in output
    assert "WARNING bad format %d ('not a number',)\n" in output
    assert f"WARNING {'x' * 60}…(100 chars)\n" in output
    assert "RuntimeError: Authorization: Bearer [TOKEN]" in output
    assert "abcdefghijklmnop123456" not in output


def test_plain_lines_carry_the_context(configure: Configure) -> None:
    stream = configure(json_logs=False)

    with log_context(job_id="job-1", tenant="acme"):
        logging.getLogger("chordal.test").info("mail jane@example.com")

    line = stream.getvalue().rstrip()
    assert line.endswith("INFO chordal.test [job_id=job-1 tenant=acme]: mail [EMAIL]")


def test_trace_ids_from_the_current_opentelemetry_span(configure: Configure) -> None:
    stream = configure()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("chordal.test")
    log = logging.getLogger("chordal.test")

    with tracer.start_as_current_span("agent.run"):
        log.info("in a span")
    log.info("outside")
    provider.shutdown()

    inside, outside = lines(stream)
    (span,) = exporter.get_finished_spans()
    assert inside["trace_id"] == f"{span.context.trace_id:032x}"
    assert inside["span_id"] == f"{span.context.span_id:016x}"
    assert "trace_id" not in outside


def test_task_argsrepr_previews_the_input_and_keeps_other_fields() -> None:
    job: dict[str, Any] = {
        "agent": "writer",
        "input": "Please e-mail bob@corp.example.com the summary. " + "More context. " * 100,
        "tenant": "acme",
        "priority": 5,
        "metadata": {"api_key": "abc123", "source": "web"},
    }
    kwargs = {"member": False, "earlier": [{"output": "An earlier answer. " * 50}]}

    argsrepr, kwargsrepr = task_argsrepr((job, {"tier": "fast"}), kwargs)

    assert "bob@corp" not in argsrepr
    assert "'input': 'Please e-mail [EMAIL] the summary." in argsrepr
    assert f"…({len(job['input'])} chars)'" in argsrepr
    assert "'tenant': 'acme', 'priority': 5" in argsrepr
    assert "'metadata': {'api_key': '[API_KEY]', 'source': 'web'}" in argsrepr
    assert argsrepr.endswith(", {'tier': 'fast'})")
    assert "'member': False" in kwargsrepr
    assert len(kwargsrepr) < 200
    assert len(task_argsrepr(([job] * 50,), {})[0]) == 1024 + len("…")  # Celery's own cap


def test_task_events_carry_a_redacted_preview(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(Request, "send_event", lambda self, kind, **f: sent.append((kind, f)))
    request = object.__new__(RedactingRequest)

    request.send_event("task-succeeded", result=repr(OUTPUT), runtime=0.5)
    request.send_event("task-failed", exception="ValueError('jane@example.com')", traceback="tb")

    (_, succeeded), (_, failed) = sent
    assert succeeded["runtime"] == 0.5
    assert succeeded["result"].endswith(f"…({len(repr(OUTPUT))} chars)")
    assert "jane.doe" not in succeeded["result"]
    assert failed["exception"] == "ValueError('[EMAIL]')"


class FakeTask:
    """What task_prerun hands its receivers as the task (signal senders must be hashable)."""

    name = "agents.run"
    request = SimpleNamespace(root_id=ROOT_ID)


def test_task_signals_bind_and_clear_the_log_context(configure: Configure) -> None:
    import workers.app  # noqa: F401 - connects Chordal's receivers

    stream = configure()
    task = FakeTask()

    signals.task_prerun.send(
        sender=task, task_id=TASK_ID, task=task, args=({"tenant": "acme"},), kwargs={}
    )
    logging.getLogger("chordal.test").info("running")
    signals.task_postrun.send(sender=task, task_id=TASK_ID, task=task)
    logging.getLogger("chordal.test").info("done")

    running, done = lines(stream)
    assert (running["job_id"], running["task_id"], running["tenant"]) == (ROOT_ID, TASK_ID, "acme")
    assert "job_id" not in done


def test_every_task_message_carries_redacted_argument_reprs() -> None:
    from workers.app import create_app
    from workers.settings import Settings

    amqp = create_app(Settings(broker_url="redis://unused")).amqp
    job = {"agent": "writer", "input": OUTPUT, "tenant": "acme"}

    message = amqp.as_task_v2(
        "task-1", "chordal.route", args=(job,), kwargs={"member": True}, create_sent_event=True
    )
    given = amqp.as_task_v2("task-2", "chordal.route", args=(job,), argsrepr="(shown,)")

    assert "jane.doe" not in message.headers["argsrepr"]
    assert "'tenant': 'acme'" in message.headers["argsrepr"]
    assert message.headers["kwargsrepr"] == "{'member': True}"
    # The task-sent event Flower reads is built from the same reprs.
    assert "jane.doe" not in str(message.sent_event)
    assert given.headers["argsrepr"] == "(shown,)"


def test_job_tenant_from_a_job_in_args_or_kwargs() -> None:
    assert job_tenant(({"agent": "a", "input": "x", "tenant": "acme"}, {}), {}) == "acme"
    assert job_tenant((), {"team_job": {"tenant": "globex"}, "member": True}) == "globex"
    assert job_tenant(("text",), None) is None
