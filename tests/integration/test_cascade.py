"""The quality-aware cascade and the classifier, end to end on the session stack."""

from __future__ import annotations

import pytest

from chordal.simulator.admin import SimulatorAdmin

pytestmark = pytest.mark.integration


def test_cheap_answer_that_validates_is_kept_and_reports_the_saving(submit_and_wait) -> None:
    result = submit_and_wait(agent="critic", input="Review: ship on Friday.", cascade="schema")

    report = result["cascade"]
    assert report["escalated"] is False
    assert report["first_model"] == result["model"]
    assert report["strong_model"] == result["decision"]["cascade"][0] != result["model"]
    assert report["cost_usd"] == pytest.approx(result["cost_usd"])
    assert report["saved_usd"] == pytest.approx(report["strong_only_usd"] - report["cost_usd"])
    assert report["saved_usd"] > 0


def test_cheap_answer_that_fails_its_schema_escalates_to_the_strong_model(
    submit_and_wait, simulator: SimulatorAdmin
) -> None:
    # Given: the cheap model's structured answers are broken
    first = submit_and_wait(agent="critic", input="Review: ship on Monday.", cascade="schema")
    cheap, strong = first["model"], first["cascade"]["strong_model"]
    simulator.fault(cheap, malformed_rate=1.0)

    # When
    result = submit_and_wait(agent="critic", input="Review: ship on Monday.", cascade="schema")

    # Then: the strong model answered; the cheap call is an attempt, billed in the total
    assert result["model"] == strong
    escalated = result["failed_attempts"][0]
    assert (escalated["model"], escalated["error_kind"]) == (cheap, "Escalated")
    assert "invalid output" in escalated["error"]
    assert escalated["cost_usd"] > 0
    report = result["cascade"]
    assert report["escalated"] is True
    assert report["cost_usd"] == pytest.approx(result["cost_usd"])
    assert report["saved_usd"] == pytest.approx(-escalated["cost_usd"])
    assert result["structured"]["verdict"] in {"accept", "revise"}


@pytest.mark.parametrize(("verdict", "escalates"), [("accept", False), ("revise", True)])
def test_a_critic_decides_whether_a_cheap_answer_stands(
    submit_and_wait, simulator: SimulatorAdmin, verdict: str, escalates: bool
) -> None:
    # Given: every critic on every model says the same thing
    simulator.fault("*", json_overrides={"verdict": verdict, "issues": ["too vague"]})

    result = submit_and_wait(agent="writer", input="Write a release note.", cascade="critic")

    report = result["cascade"]
    assert report["escalated"] is escalates
    if escalates:
        assert "too vague" in report["reason"]
        assert result["model"] == report["strong_model"]
    else:
        assert result["model"] == report["first_model"]
    # Every call the cascade made, the critic's included, is billed to the job.
    assert report["cost_usd"] == pytest.approx(result["cost_usd"])


def test_classify_routes_with_the_classifiers_label(
    submit_and_wait, simulator: SimulatorAdmin
) -> None:
    simulator.fault("*", json_overrides={"label": "high", "confidence": 0.9})

    result = submit_and_wait(agent="analyst", input="Is this merger wise?", complexity="classify")

    assert result["decision"]["complexity"] == 0.85
    assert result["agent"] == "analyst"
