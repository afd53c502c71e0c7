"""Team jobs on Celery chords: every member routed on its own, failures as data."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from workers.errors import AgentFailed

pytestmark = pytest.mark.integration


def _fast_models(stack: LocalStack) -> list[str]:
    from routing.catalog import read_catalog

    catalog = read_catalog(stack.settings.catalog_path)
    return [e.model_name for e in catalog.model_list if e.model_info.tier == "fast"]


def test_ensemble_routes_each_member_on_its_own_tier(submit_and_wait) -> None:
    result = submit_and_wait(team="research", input="Why do task queues ack late?")

    assert result["team"] == "research"
    assert result["pattern"] == "ensemble"
    assert [m["agent"] for m in result["members"]] == ["researcher", "analyst", "critic"]
    assert [m["tier"] for m in result["members"]] == ["fast", "balanced", "premium"]
    assert result["succeeded"] == 3
    assert result["failed"] == 0
    assert result["aggregator"]["agent"] == "writer"
    # The simulator quotes the start of the prompt it got: the writer was given the team's task.
    assert "Task: Why do task queues ack late?" in result["output"]
    billed = [*result["members"], result["aggregator"]]
    assert result["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in billed))
    assert result["tokens_in"] == sum(m["tokens_in"] for m in billed)


def test_twenty_member_ensemble_completes_with_every_member_once(submit_and_wait) -> None:
    result = submit_and_wait(team="twenty", input="Twenty views on late acks, please.")

    assert result["succeeded"] == 20
    assert [m["metadata"]["member"] for m in result["members"]] == list(range(20))
    assert len({m["job_id"] for m in result["members"]}) == 20
    assert {m["tier"] for m in result["members"]} == {"fast", "balanced", "premium"}
    billed = [*result["members"], result["aggregator"]]
    assert result["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in billed))


def test_failed_member_is_data_and_the_aggregator_still_runs(
    stack: LocalStack, submit_and_wait, simulator: SimulatorAdmin
) -> None:
    # Given: every fast-tier model is down, and the team's researcher is pinned to fast
    for model in _fast_models(stack):
        simulator.fault(model, outage=True)

    # When
    result = submit_and_wait(team="trio", input="What is a chord?")

    # Then: the researcher is a failure record, the others answered, the writer combined them
    researcher, analyst, critic = result["members"]
    assert researcher["status"] == "failed"
    assert researcher["error_kind"] == "ProviderUnavailable"
    assert len(researcher["failed_attempts"]) == stack.settings.max_attempts
    assert {a["tier"] for a in researcher["failed_attempts"]} == {"fast"}
    assert analyst["status"] == critic["status"] == "succeeded"
    assert (result["succeeded"], result["failed"]) == (2, 1)
    assert result["aggregator"]["status"] == "succeeded"


def test_min_success_not_met_fails_listing_every_failed_member(
    stack: LocalStack, client: Client, simulator: SimulatorAdmin
) -> None:
    for model in _fast_models(stack):
        simulator.fault(model, outage=True)

    job_id = client.submit({"team": "unanimous", "input": "Both of you, please."})

    with pytest.raises(AgentFailed, match=r"1 of 2 members succeeded, 2 required") as failure:
        client.wait(job_id, timeout=60)
    assert "researcher: ProviderUnavailable" in str(failure.value)


def test_map_reduce_maps_every_chunk_then_reduces(submit_and_wait) -> None:
    paragraphs = [f"Paragraph {n}. " + "Celery chords join results. " * 8 for n in range(6)]

    result = submit_and_wait(team="small-chunks", input="\n\n".join(paragraphs))

    assert result["pattern"] == "map_reduce"
    assert len(result["members"]) >= 4
    assert {m["agent"] for m in result["members"]} == {"summarizer"}
    assert all(m["status"] == "succeeded" for m in result["members"])
    assert result["aggregator"]["agent"] == "summarizer"


def test_plan_execute_builds_its_chord_from_the_plan(submit_and_wait) -> None:
    result = submit_and_wait(team="project", input="Write a launch note for Chordal.")

    assert result["pattern"] == "plan_execute"
    plan = result["planner"]["structured"]
    assert len(result["members"]) == len(plan["steps"]) >= 1
    # The simulator's plan names no real agent, so every step ran with the default agent.
    assert {m["agent"] for m in result["members"]} == {"researcher"}
    assert result["aggregator"]["agent"] == "writer"


def test_unknown_team_is_refused_before_enqueue(client: Client) -> None:
    from workers.errors import UnknownAgent

    with pytest.raises(UnknownAgent, match=r"unknown team 'choir'.*research") as refused:
        client.submit({"team": "choir", "input": "sing"})
    assert refused.value.field == "team"


def test_cli_submits_a_team_job_and_shows_its_tree(stack: LocalStack) -> None:
    def chordal(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chordal.cli", *args],
            env=stack.env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    done = chordal("submit", "--team", "research", "A question?", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["team"] == "research"

    shown = chordal("status", result["job_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["state"] == "SUCCESS"
    assert [(m["phase"], m["agent"]) for m in status["members"]] == [
        ("member", "researcher"),
        ("member", "analyst"),
        ("member", "critic"),
        ("aggregator", "writer"),
    ]
    assert all(m["state"] == "SUCCESS" and m["cost_usd"] > 0 for m in status["members"])

    tree = chordal("status", result["job_id"])
    assert tree.returncode == 0, tree.stderr
    assert "aggregator #1 writer: succeeded on" in tree.stdout


@pytest.mark.parametrize(
    ("team", "pattern"),
    [("digest", "map_reduce"), ("project", "plan_execute"), ("debate", "debate")],
)
def test_cli_runs_every_pattern(stack: LocalStack, team: str, pattern: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chordal.cli", "submit", "--team", team, "Chords, please.",
         "--wait", "--json"],
        env=stack.env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["team"], result["pattern"]) == (team, pattern)
    assert result["succeeded"] == len(result["members"]) >= 1
    assert result["aggregator"]["status"] == "succeeded"


def test_debate_runs_every_round_then_the_judge(submit_and_wait) -> None:
    result = submit_and_wait(team="two-rounds", input="Is acks_late worth its cost?")

    assert result["pattern"] == "debate"
    # Two seats: the proposals, then two rounds of revisions, in order and labelled.
    assert [m["agent"] for m in result["members"]] == ["analyst", "critic"] * 3
    labels = [(m["metadata"]["round"], m["metadata"]["member"]) for m in result["members"]]
    assert labels == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(m["status"] == "succeeded" for m in result["members"])
    # A revision's prompt carries the round before (the simulator quotes the prompt's start).
    assert "Task: Is acks_late worth its cost?" in result["members"][2]["output"]
    assert result["aggregator"]["agent"] == "analyst"
    billed = [*result["members"], result["aggregator"]]
    assert result["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in billed))


@pytest.mark.timeout(300)
def test_500_member_map_reduce_completes_without_a_giant_join(client: Client) -> None:
    from celery.result import AsyncResult

    # Each paragraph is one chunk of the small-chunks team (chunk_chars 300).
    paragraphs = [f"Part {n:03d}. " + "Chords join many results. " * 10 for n in range(500)]
    job_id = client.submit(
        {"team": "small-chunks", "input": "\n\n".join(p.strip() for p in paragraphs)}
    )

    result = client.wait(job_id, timeout=240)

    assert len(result["members"]) == 500
    assert result["succeeded"] == 500
    assert [m["metadata"]["member"] for m in result["members"]] == list(range(500))
    assert result["aggregator"]["status"] == "succeeded"
    # What each member returned into the chord's join is a compact reference, not its answer:
    # the callback message carries 500 of these.
    joined = [
        AsyncResult(node["task_id"], app=client.app).result
        for node in client.tree(job_id)
        if node["phase"] == "map"
    ]
    assert len(joined) == 500
    assert all("output" not in item and item["parked"] for item in joined)
    join_bytes = sum(len(json.dumps(item)) for item in joined)
    full_bytes = sum(len(json.dumps(member)) for member in result["members"])
    assert join_bytes * 4 < full_bytes
    assert join_bytes < 300_000


@pytest.mark.timeout(120)
def test_cancel_mid_team_stops_every_member_and_no_new_calls_reach_the_provider(
    stack: LocalStack, client: Client, simulator: SimulatorAdmin
) -> None:
    from tests.support import LATENCY_SCALE
    from workers.errors import Cancelled

    # Given: a map_reduce team whose members take 3 s each, running
    model = client.wait(
        client.submit({"agent": "summarizer", "input": "probe", "tier": "fast"}), timeout=60
    )["model"]
    simulator.fault(model, latency_median_s=3.0 / LATENCY_SCALE, latency_sigma=0.0)
    text = "\n\n".join(f"Part {n}. " + "Chords join results. " * 12 for n in range(8))
    job_id = client.submit({"team": "small-chunks", "input": text})
    deadline = time.monotonic() + 30
    while simulator.stats()["jobs"].get(job_id, 0) < 8:
        assert time.monotonic() < deadline, "the members never reached the provider"
        time.sleep(0.05)

    # The tree shows every member live: routed to its model, its call still running
    running = client.tree(job_id)
    assert [(n["phase"], n["index"]) for n in running] == [("map", i) for i in range(8)]
    assert {(n["state"], n["model"]) for n in running} == {("ROUTED", model)}

    # When
    client.cancel(job_id)
    time.sleep(0.5)  # calls already on the wire when the cancel went out are counted by now
    calls_at_cancel = simulator.stats()["jobs"][job_id]

    # Then: the job is cancelled, and neither the members nor the aggregator call again
    with pytest.raises(Cancelled):
        client.wait(job_id, timeout=10)
    assert client.status(job_id).state == "REVOKED"
    time.sleep(4.0)  # longer than a member's call: a member left running would have finished
    assert simulator.stats()["jobs"][job_id] == calls_at_cancel
    assert client.status(job_id).state == "REVOKED"
    fast_log = next(c for c in stack.children if c.name.startswith("fast")).log.read_text()
    assert f"job {job_id} cancelled: stopped" in fast_log


def test_member_past_the_deadline_is_timed_out_and_the_aggregator_runs(
    stack: LocalStack, submit_and_wait, simulator: SimulatorAdmin
) -> None:
    from routing.catalog import read_catalog
    from tests.support import LATENCY_SCALE

    # Given: every premium model takes 20 s, the team's deadline is 2 s
    for entry in read_catalog(stack.settings.catalog_path).model_list:
        if entry.model_info.tier == "premium":
            simulator.fault(entry.model_name, latency_median_s=20 / LATENCY_SCALE, latency_sigma=0)

    # When
    result = submit_and_wait(team="hurried", input="Quick, please.", timeout=30)

    # Then: the critic timed out, the others answered, the writer combined what arrived
    researcher, analyst, critic = result["members"]
    assert critic["status"] == "timed_out"
    assert critic["error_kind"] == "DeadlineExceeded"
    assert researcher["status"] == analyst["status"] == "succeeded"
    assert (result["succeeded"], result["failed"], result["timed_out"]) == (2, 0, 1)
    assert result["aggregator"]["status"] == "succeeded"
    # The job ended while the provider still held the critic's abandoned call.
    slow_model = critic["failed_attempts"][0]["model"]
    assert simulator.stats()["models"][slow_model]["in_flight"] >= 1


def test_team_budget_that_cannot_fit_the_cheapest_plan_is_refused_up_front(
    client: Client, simulator: SimulatorAdmin
) -> None:
    from workers.errors import BudgetExceeded

    # The research team's critic is pinned to premium: its worst case alone is about $0.01.
    job_id = client.submit({"team": "research", "input": "Too cheap?", "max_cost_usd": 0.005})

    with pytest.raises(BudgetExceeded, match=r"max_cost_usd=0.005 .* cheapest plan"):
        client.wait(job_id, timeout=60)
    assert simulator.stats()["jobs"].get(job_id, 0) == 0, "no member may start"


def test_team_budget_bounds_every_members_worst_case(submit_and_wait) -> None:
    # Unbudgeted, the analyst (complexity 0.95) goes to premium, whose worst case is ~$0.01.
    assert submit_and_wait(team="frugal", input="Free rein?")["members"][0]["tier"] == "premium"
    budget = 0.005

    result = submit_and_wait(team="frugal", input="Within budget?", max_cost_usd=budget)

    assert result["succeeded"] == 2
    assert result["members"][0]["tier"] != "premium"
    assert result["cost_usd"] <= budget
    worst_cases = [
        m["decision"]["max_cost_usd"] for m in [*result["members"], result["aggregator"]]
    ]
    assert sum(worst_cases) <= budget


def test_nested_team_reports_to_its_parent_like_any_member(submit_and_wait, client) -> None:
    result = submit_and_wait(team="nested", input="How do chords join?")

    # The first member is the whole trio team, with its own members and aggregator.
    inner, critic = result["members"]
    assert inner["team"] == "trio"
    assert inner["pattern"] == "ensemble"
    assert [m["agent"] for m in inner["members"]] == ["researcher", "analyst", "critic"]
    assert inner["succeeded"] == 3
    assert inner["aggregator"]["agent"] == "writer"
    assert critic["agent"] == "critic"
    assert critic["tier"] == "fast"
    assert result["succeeded"] == 2
    # The outer writer read the inner team's answer.
    assert "How do chords join?" in result["aggregator"]["output"]
    billed = [inner, critic, result["aggregator"]]
    assert result["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in billed))
    assert inner["cost_usd"] == pytest.approx(
        sum(m["cost_usd"] for m in [*inner["members"], inner["aggregator"]])
    )
    # The job's tree nests the inner team's members under the member that ran it.
    tree = {m["task_id"]: m for m in client.tree(result["job_id"])}
    nested = [m for m in tree.values() if m["parent"] == inner["job_id"]]
    assert sorted(m["agent"] for m in nested) == ["analyst", "critic", "researcher", "writer"]
    assert tree[inner["job_id"]]["agent"] == "trio"
    assert tree[inner["job_id"]]["parent"] == result["job_id"]


def test_nested_team_that_fails_is_a_failure_record_for_its_parent(
    stack: LocalStack, submit_and_wait, simulator: SimulatorAdmin
) -> None:
    # Given: the inner team's aggregator (trio's writer, premium) has no model that answers
    from routing.catalog import read_catalog

    catalog = read_catalog(stack.settings.catalog_path)
    for entry in catalog.model_list:
        if entry.model_info.tier == "premium":
            simulator.fault(entry.model_name, outage=True)

    # When
    result = submit_and_wait(team="nested", input="Will this fail?")

    # Then: the parent got a failure record for the inner team and still answered
    inner, critic = result["members"]
    assert inner["status"] == "failed"
    assert inner["agent"] == "trio"
    assert "aggregator writer failed" in inner["error"]
    assert critic["status"] == "succeeded"
    assert (result["succeeded"], result["failed"]) == (1, 1)


def test_nested_team_can_sit_in_a_debate(submit_and_wait) -> None:
    result = submit_and_wait(team="nested-debate", input="Should chords nest?")

    assert [m.get("team") or m["agent"] for m in result["members"]] == ["trio", "analyst"] * 2
    assert [m["metadata"]["round"] for m in result["members"]] == [0, 0, 1, 1]
    assert all(m["status"] == "succeeded" for m in result["members"])
    # In round 1 the inner team saw round 0's answers (the simulator quotes the prompt's start).
    assert "Round 0 answers" in result["members"][2]["members"][0]["output"]
