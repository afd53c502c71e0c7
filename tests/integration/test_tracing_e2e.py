"""A team job is one trace from the producer's submit to the aggregator, across processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agents.client import Client
from chordal.stack import LocalStack
from tests.support import stack_settings
from tests.support_otlp import OtlpReceiver
from workers.observability import tracing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_stack(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as patch:
        # The standard variables, inherited by every worker process and read by this producer.
        patch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        with LocalStack(stack_settings(tmp_path_factory.mktemp("traced"))) as stack:
            yield stack
        tracing.shutdown_tracing()


def test_a_team_job_is_one_trace_from_submit_to_the_aggregator(
    traced_stack: LocalStack, receiver: OtlpReceiver
) -> None:
    client = Client(settings=traced_stack.settings)
    try:
        result = client.wait(client.submit({"team": "trio", "input": "Trace me."}), timeout=60)
    finally:
        client.app.close()
    tracing.shutdown_tracing()  # flush the producer's spans

    calls = len(result["members"]) + 1  # and the aggregator's

    def complete(spans: list[dict[str, Any]]) -> bool:
        # Each worker process exports on its own schedule: wait for every part to arrive.
        names = [s["name"] for s in spans]
        ids = {s["span_id"] for s in spans}
        return (
            "chordal.submit" in names
            and any("chordal.team.finalize" in n for n in names)
            and sum(n.startswith("chat ") for n in names) >= calls
            and all(s["parent_span_id"] in ids for s in spans if s["parent_span_id"])
        )

    receiver.wait_for(complete, timeout=30)
    spans = receiver.spans()
    (submit,) = [s for s in spans if s["name"] == "chordal.submit"]
    trace = [s for s in spans if s["trace_id"] == submit["trace_id"]]

    # Every process's part is in the producer's trace: routing, each member's LLM call, the
    # aggregator and the finalize step.
    names = [s["name"] for s in trace]
    assert sum(n.startswith("chat ") for n in names) == calls
    assert "chordal.routing" in names
    assert any("chordal.team.aggregate" in n for n in names)
    assert {s["service_name"] for s in trace} == {"chordal-producer", "chordal-worker"}
    ids = {s["span_id"] for s in trace}
    assert all(s["parent_span_id"] in ids for s in trace if s is not submit)
    chat = next(s for s in trace if s["name"].startswith("chat "))
    assert chat["attributes"]["gen_ai.operation.name"] == "chat"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] > 0
    assert "Trace me." not in str(trace)
