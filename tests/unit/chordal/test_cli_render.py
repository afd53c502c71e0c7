"""How results print: the local members' answers after a team's table."""

from __future__ import annotations

from rich.console import Console

from chordal.cli.render import print_local_answers


def member(agent: str, tier: str, output: str, status: str = "succeeded") -> dict[str, object]:
    return {
        "status": status,
        "agent": agent,
        "model": f"{tier}-model",
        "tier": tier,
        "output": output,
    }


def test_only_succeeded_local_members_answers_are_printed_as_written() -> None:
    out = Console(record=True, width=100)
    result = {
        "team": "research-local",
        "members": [
            member("researcher", "fast", "[simulated] cloud"),
            member("researcher", "local", "Paris is [the] capital."),
            member("critic", "local", "never shown", status="failed"),
        ],
    }

    print_local_answers(out, result)

    text = out.export_text()
    assert "researcher on local-model (local) answered:" in text
    assert "Paris is [the] capital." in text  # not read as Rich markup
    assert "[simulated] cloud" not in text
    assert "never shown" not in text


def test_a_single_agent_result_prints_nothing_more() -> None:
    out = Console(record=True)

    print_local_answers(out, {"agent": "researcher", "tier": "local", "output": "x"})

    assert out.export_text() == ""
