"""A job end to end: producer → router task → tier worker → LiteLLM → simulator → result."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agents import explain
from agents.client import Client
from bench.events import EventLog
from chordal.simulator.admin import SimulatorAdmin
from workers.errors import InvalidJob, NoEligibleModel

pytestmark = pytest.mark.integration


def test_job_result_costs_litellms_price_for_the_tokens_used(submit_and_wait) -> None:
    import litellm

    result = submit_and_wait(agent="summarizer", input="Celery acknowledges late.")

    prices = litellm.model_cost[_price_model(result["model"])]
    expected = (
        result["tokens_in"] * prices["input_cost_per_token"]
        + result["tokens_out"] * prices["output_cost_per_token"]
    )
    assert result["tokens_in"] > 0
    assert result["tokens_out"] > 0
    assert result["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert result["attempts"] == 1
    assert "simulat" in result["output"].lower()


def _price_model(name: str) -> str:
    from routing.catalog import read_catalog

    entry = next(e for e in read_catalog().model_list if e.model_name == name)
    return str(entry.litellm_params["model"])


def _best_candidate(client: Client, result: dict[str, Any]) -> dict[str, Any]:
    # The result's decision names the model; its candidates are in the explain record.
    assert "candidates" not in result["decision"]
    candidates: list[dict[str, Any]] = explain.read(client.app, result["job_id"])[-1]["candidates"]
    assert candidates[0]["model"] == result["model"]
    return candidates[0]


def test_simple_job_goes_to_a_cheaper_tier_than_a_complex_one(
    submit_and_wait, client: Client
) -> None:
    simple = submit_and_wait(agent="classifier", input="Is this spam? WIN A PRIZE", complexity=0.1)
    complex_ = submit_and_wait(agent="analyst", input="Prove it.", complexity=0.95)

    assert simple["tier"] == "fast"
    assert complex_["tier"] == "premium"
    assert _best_candidate(client, complex_)["quality"] > _best_candidate(client, simple)["quality"]


def test_min_quality_picks_a_model_that_meets_it(submit_and_wait, client: Client) -> None:
    result = submit_and_wait(agent="summarizer", input="Summarise this.", min_quality=0.95)

    assert _best_candidate(client, result)["quality"] >= 0.95
    assert result["tier"] == "premium"


def test_structured_agent_returns_validated_output(submit_and_wait) -> None:
    result = submit_and_wait(agent="classifier", input="Refund request for order 12")

    assert set(result["structured"]) == {"label", "confidence"}
    assert 0 <= result["structured"]["confidence"] <= 1


def test_provider_error_on_one_model_lands_the_job_on_another(
    submit_and_wait, simulator: SimulatorAdmin
) -> None:
    first_choice = submit_and_wait(agent="summarizer", input="warm")["model"]
    simulator.fault(first_choice, outage=True)

    result = submit_and_wait(agent="summarizer", input="Summarise this please.")

    assert result["model"] != first_choice
    assert result["attempts"] == 2
    assert [a["model"] for a in result["failed_attempts"]] == [first_choice]
    assert result["failed_attempts"][0]["error_kind"] == "ProviderUnavailable"
    assert simulator.stats()["models"][first_choice]["outages"] == 1


def test_all_attempts_failing_fails_the_job_with_every_model_tried(
    client: Client, simulator: SimulatorAdmin
) -> None:
    simulator.fault("*", outage=True)

    job_id = client.submit({"agent": "summarizer", "input": "nobody answers"})

    with pytest.raises(Exception, match="3 attempts failed") as failure:
        client.wait(job_id, timeout=60)
    assert type(failure.value).__name__ == "ProviderUnavailable"


def test_prompt_larger_than_every_context_window_fails_naming_input(client: Client) -> None:
    huge = "word " * 1_100_000  # about 1.1 M tokens; the largest window is 1,048,576

    # Refused at submit by the input bound (1 MiB), before anything tokenizes 5.5 MB; the
    # router's own context-window check is in tests/unit/routing/test_scoring.py.
    with pytest.raises(InvalidJob, match="max_input_bytes") as failure:
        client.submit({"agent": "summarizer", "input": huge})
    assert failure.value.field == "input"


def test_impossible_budget_fails_naming_the_constraint(client: Client) -> None:
    job_id = client.submit({"agent": "writer", "input": "An essay.", "max_cost_usd": 1e-9})

    with pytest.raises(NoEligibleModel, match="max_cost_usd") as failure:
        client.wait(job_id, timeout=60)
    assert failure.value.field == "max_cost_usd"


def test_idempotency_key_enqueues_once(client: Client) -> None:
    job = {"agent": "summarizer", "input": "once", "idempotency_key": "order-42"}

    first = client.submit(job)
    second = client.submit(job)

    assert first == second
    assert client.wait(first, timeout=60)["job_id"] == first


def test_the_router_hands_the_job_over_without_reporting_success_itself(client: Client) -> None:
    # The router sends the agent task under the job's id and ends (workers.handoff); only the
    # tier worker's agent task reports the job done, to Flower as to the result backend.
    with EventLog(client.app) as events:
        # The receiver's subscription is live once a worker's heartbeat event has come through:
        # an event sent before that (the router's task-started, within milliseconds) is lost.
        events.wait_for("worker-heartbeat", timeout=15.0)
        # Unpinned, so it goes through the router (a pinned job skips it: test_pinned_jobs).
        job_id = client.submit({"agent": "summarizer", "input": "Hand me over."})
        result = client.wait(job_id, timeout=60)
        events.wait_for("task-succeeded", uuid=job_id)
        time.sleep(1.0)  # time enough for a second success event to arrive, if one were sent
        successes = list(events.matching("task-succeeded", uuid=job_id))
        started = [e["hostname"] for e in events.matching("task-started", uuid=job_id)]

    assert result["job_id"] == job_id
    assert result["tier"] == "fast"
    assert len(started) == 2  # the router, then the fast tier's agent task, under one id
    assert [e["hostname"] for e in successes] == [started[-1]]
    assert started[-1].startswith("fast")
