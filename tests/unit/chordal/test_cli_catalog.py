"""``chordal catalog check``: the table, the skips and warnings, the problems, the exit codes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chordal.cli import cli
from tests.support import LITELLM_CONFIG_INVALID, LITELLM_CONFIG_UNROUTABLE
from workers.settings import get_settings

LITELLM_CONFIG = Path(__file__).parents[1] / "routing" / "data" / "litellm_proxy_config.yaml"


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Run ``chordal catalog check ARGS`` with no CHORDAL_* from the machine, wide enough."""
    for name in list(os.environ):
        if name.startswith("CHORDAL_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["catalog", "check", *args], env={"COLUMNS": "250"})

    yield run
    get_settings.cache_clear()


def test_litellm_config_prints_its_deployments_skips_and_warnings(check) -> None:
    result = check(str(LITELLM_CONFIG))

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "6 deployments in 5 groups" in lines[0]
    (azure,) = [line for line in lines if line.strip().startswith("azure-eu")]
    assert azure.split() == [
        "azure-eu", "gpt-4o", "azure", "premium*", "unknown", "$2.5/$10", "128,000", "300/300,000"
    ]  # fmt: skip
    # One deployment and no model_info.id: the fleet keys it by its model's name.
    (mini,) = [line for line in lines if line.split()[:2] == ["gpt-5-mini", "gpt-5-mini"]]
    assert mini.split()[3:6] == ["balanced*", "0.78", "table"]
    assert "quality unknown: gpt-4o: never chosen for a job with min_quality" in result.output
    pick = "within a group, a deployment is picked with the fewest calls in flight (least-busy)"
    assert pick in lines
    assert "alias gpt-4 -> gpt-4o" in lines
    skipped = [line for line in lines if line.startswith("skipped ")]
    assert [line.split(":")[0] for line in skipped] == [
        "skipped catalog entry 7 (my-finetune)",
        "skipped catalog entry 8 (embedding)",
        "skipped catalog entry 9 (dall-e-3)",
        "skipped catalog entry 10 (openai/*)",
        "skipped catalog entry 11 (anthropic/*)",
    ]
    warnings = [line for line in lines if line.startswith("warning ")]
    assert len(warnings) == 5
    assert (
        "warning litellm_settings.num_retries: ignored: Chordal is the retry layer" in (warnings[0])
    )


def test_json_output_has_every_deployment_and_what_was_inferred(check) -> None:
    result = check(str(LITELLM_CONFIG), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    by_id = {row["deployment_id"]: row for row in report["deployments"]}
    assert by_id["azure-eu"] | {"quality": None} == by_id["azure-eu"]
    assert by_id["azure-eu"]["tier_source"] == "inferred"
    assert by_id["azure-eu"]["blended_usd_per_million"] == 6.25
    assert by_id["azure-eu"]["timeout_s"] == 45
    assert [item["entry"] for item in report["skipped"]] == [7, 8, 9, 10, 11]
    assert report["aliases"] == {"gpt-4": "gpt-4o", "claude": "claude-sonnet"}
    assert report["unknown_quality"] == ["gpt-4o"]
    assert report["tier_price_bands_usd"] == {"fast": 1.0, "balanced": 5.0}


def test_the_catalog_in_force_is_checked_without_a_file(check) -> None:
    result = check()

    assert result.exit_code == 0, result.output
    assert "10 deployments in 10 groups" in result.output
    report = json.loads(check("--json").output)
    assert {row["tier_source"] for row in report["deployments"]} == {"catalog"}
    assert report["skipped"] == report["warnings"] == []


def test_an_invalid_file_exits_78_with_a_line_per_problem(check, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(LITELLM_CONFIG_INVALID)

    result = check(str(path))

    assert result.exit_code == os.EX_CONFIG
    assert [line.strip() for line in result.output.splitlines()] == [
        f"error: invalid catalog {path}:",
        'catalog entry 1 (model_name "gpt-4o"): model_info.tier: got "gold"; expected one of '
        "fast, balanced, premium, local",
        'catalog entry 2 (model_name "claude-sonnet"): litellm_params: litellm_params.model is '
        "required",
        'catalog entry 2 (model_name "claude-sonnet"): model_info.rpm: got -5; should be greater '
        "than 0",
    ]


def test_a_file_with_nothing_to_route_to_exits_78_naming_each_skip(check, tmp_path) -> None:
    path = tmp_path / "unroutable.yaml"
    path.write_text(LITELLM_CONFIG_UNROUTABLE)

    result = check(str(path), "--json")

    assert result.exit_code == os.EX_CONFIG
    report = json.loads(result.output)
    assert report["ok"] is False
    assert [problem.split(": skipped: ")[0] for problem in report["problems"]] == [
        'catalog entry 1 (model_name "embedding")',
        'catalog entry 2 (model_name "gpt-4o")',
        'catalog entry 3 (model_name "*")',
    ]


def test_a_local_catalog_is_checked_as_one(check) -> None:
    from routing.catalog import default_local_catalog_path

    local = str(default_local_catalog_path())

    assert check(local, "--local").exit_code == 0
    refused = check(local)
    assert refused.exit_code == os.EX_CONFIG
    assert "CHORDAL_LOCAL_CATALOG_PATH" in refused.output


def test_the_check_needs_no_broker(check, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1; a check that touched the broker would fail or hang.
    monkeypatch.setenv("CHORDAL_BROKER_URL", "redis://:unused@127.0.0.1:1/0")

    result = check(str(LITELLM_CONFIG), "--json")

    assert result.exit_code == 0, result.output
