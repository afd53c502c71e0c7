"""``chordal breaker`` and ``chordal explain`` as an operator runs them, on the session stack."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agents.client import Client
from chordal.stack import LocalStack
from routing.catalog import read_catalog
from routing.fleet import Fleet

pytestmark = pytest.mark.integration


def _chordal(*args: str, stack: LocalStack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chordal.cli", *args], env=stack.env(), capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def _breakers(stack: LocalStack) -> dict[str, dict[str, Any]]:
    done = _chordal("breaker", "list", "--json", stack=stack)
    assert done.returncode == 0, done.stderr
    return {row["model"]: row for row in json.loads(done.stdout)}


@pytest.fixture
def catalog_models(stack: LocalStack) -> Iterator[list[str]]:
    """The catalog's model names, every breaker closed before and after the test."""
    fleet = Fleet.connect(stack.settings)
    names = [e.model_name for e in read_catalog(stack.settings.catalog_path).model_list]
    for name in names:
        fleet.breakers.force_close(name)
    yield names
    for name in names:
        fleet.breakers.force_close(name)


def test_breaker_list_shows_every_catalog_model_closed(
    stack: LocalStack, catalog_models: list[str]
) -> None:
    rows = _breakers(stack)

    assert sorted(rows) == sorted(catalog_models)
    assert {row["state"] for row in rows.values()} == {"closed"}
    assert all(row["latency"]["source"] in {"live", "catalog"} for row in rows.values())
    table = _chordal("breaker", "list", stack=stack)
    assert table.returncode == 0, table.stderr
    assert "closed" in table.stdout


def test_an_opened_breaker_is_listed_open_and_routed_around_until_closed(
    stack: LocalStack,
    catalog_models: list[str],
    submit_and_wait: Callable[..., dict[str, Any]],
) -> None:
    # Given the model a premium job goes to
    job = {"agent": "summarizer", "input": "Summarise: queues hold work.", "tier": "premium"}
    usual = submit_and_wait(**job)["model"]

    # When an operator forces its breaker open
    opened = _chordal("breaker", "open", usual, stack=stack)
    assert opened.returncode == 0, opened.stderr
    row = _breakers(stack)[usual]
    assert (row["state"], row["forced"], row["until_closed"]) == ("open", True, True)

    # Then the next premium job goes elsewhere, saying why in `chordal explain` (a pinned job:
    # its tier worker routed it)
    rerouted = submit_and_wait(**job)
    assert rerouted["model"] != usual
    explained = _chordal("explain", rerouted["job_id"], "--json", stack=stack)
    assert explained.returncode == 0, explained.stderr
    notes = json.loads(explained.stdout)["decisions"][-1]["notes"]
    assert any("circuit breaker open" in n and usual in n for n in notes)

    # And closing it restores it
    closed = _chordal("breaker", "close", usual, stack=stack)
    assert closed.returncode == 0, closed.stderr
    assert _breakers(stack)[usual]["state"] == "closed"


def test_open_for_some_seconds_shows_the_time_left(
    stack: LocalStack, catalog_models: list[str]
) -> None:
    model = catalog_models[-1]

    opened = _chordal("breaker", "open", model, "--seconds", "30", stack=stack)

    assert opened.returncode == 0, opened.stderr
    row = _breakers(stack)[model]
    assert row["state"] == "open"
    assert row["until_closed"] is False
    assert 0 < row["open_for_s"] <= 30


def test_breaker_commands_refuse_an_unknown_model_naming_the_known_ones(
    stack: LocalStack, catalog_models: list[str]
) -> None:
    for command in ("open", "close"):
        done = _chordal("breaker", command, "no-such-model", stack=stack)

        assert done.returncode == 2
        assert "no-such-model" in done.stderr
        assert all(name in done.stderr for name in catalog_models)
    bad_seconds = _chordal("breaker", "open", catalog_models[0], "--seconds", "0", stack=stack)
    assert bad_seconds.returncode == 2


def test_explain_shows_the_decision_and_its_candidates(
    stack: LocalStack, submit_and_wait: Callable[..., dict[str, Any]]
) -> None:
    result = submit_and_wait(agent="summarizer", input="Summarise: acks come late.")

    shown = _chordal("explain", result["job_id"], stack=stack)
    as_json = _chordal("explain", result["job_id"], "--json", stack=stack)

    assert shown.returncode == 0, shown.stderr
    assert result["model"] in shown.stdout
    assert result["decision"]["reason"].split()[0] in shown.stdout
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["state"] == "SUCCESS"
    assert report["decisions"][-1]["model"] == result["model"]
    candidates = report["decisions"][-1]["candidates"]
    assert result["model"] in {c["model"] for c in candidates}
    assert report["failed_attempts"] == result["failed_attempts"]


def test_explain_covers_a_team_and_accepts_a_member_id(
    stack: LocalStack, client: Client, submit_and_wait: Callable[..., dict[str, Any]]
) -> None:
    result = submit_and_wait(team="trio", input="Should acks come late?")

    done = _chordal("explain", result["job_id"], "--json", stack=stack)

    assert done.returncode == 0, done.stderr
    members = json.loads(done.stdout)["members"]
    assert len(members) == 4  # three members and the aggregator
    assert all(m["decisions"] for m in members)
    member = client.tree(result["job_id"])[0]["task_id"]
    alone = _chordal("explain", member, "--json", stack=stack)
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["decisions"]


def test_explain_of_an_unknown_job_says_nothing_was_recorded(stack: LocalStack) -> None:
    done = _chordal("explain", str(uuid.uuid4()), stack=stack)

    assert done.returncode == 1
    assert "no routing decisions recorded" in done.stderr
