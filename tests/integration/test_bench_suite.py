"""The benchmark suite runs every row end to end at its smoke size (behaviour only, never speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.suite_report import VERDICTS

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ROWS = "abcdefg"


@pytest.mark.timeout(300)
def test_suite_smoke_reports_every_row_with_numbers_and_draws_the_plot(tmp_path: Path) -> None:
    # Given: where the report and the plot go
    report, plot = tmp_path / "suite.json", tmp_path / "throughput.png"

    # When: the whole suite runs at its smoke size
    command = [sys.executable, "-m", "bench.suite", "--smoke", "--json", str(report),
               "--plot", str(plot)]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False
    )

    # Then: it succeeds, every row a-g has at least one numeric figure, each part its details,
    # and the markdown table and the PNG are there
    assert done.returncode == 0, done.stderr[-4000:]
    data = json.loads(report.read_text())
    assert data["failures"] == []
    for row in ROWS:
        figures = [f for f in data["rows"] if f["row"] == row]
        assert figures, f"row {row} missing"
        assert all(isinstance(f["value"], int | float) for f in figures), figures
        assert row in data["parts"]
    # and the figures that explain the misses: CPU per message of a's and b's workers, b's
    # bare LiteLLM call and c's derived ceiling (numbers, never checked for speed)
    parts = data["parts"]
    cpu = parts["a"]["details"]["cpu_ms_per_message"] + parts["b"]["details"]["cpu_ms_per_message"]
    assert len(cpu) == 3, cpu
    assert all(isinstance(e[k], int | float) for e in cpu for k in ("one_at_a_time_ms", "batch_ms"))
    bare = parts["b"]["details"]["bare_litellm_call"]
    assert all(isinstance(bare[k], int | float) for k in ("p50_ms", "chordal_and_celery_ms"))
    ceiling = parts["c"]["details"]["derived_ceiling"]
    assert all(isinstance(v, int | float) for v in ceiling.values()), ceiling
    assert any(f["row"] == "c" and f["name"].startswith("derived") for f in data["rows"])
    assert data["params"]["smoke"] is True
    # the named verdicts: every name present; what the smoke size measures is a number (c's are
    # checked at c=500 only, which the smoke run does not reach)
    verdicts = data["verdicts"]
    assert set(verdicts) == set(VERDICTS)
    assert isinstance(verdicts["g_kb_per_call"], int | float)
    assert isinstance(verdicts["b_pinned_own_share_vs_raw"], int | float)
    assert isinstance(verdicts["b_own_share_vs_raw"], int | float)
    # and the worker ran as two processes too (--processes 2), beside the one-process row
    scenarios = {r["scenario"] for r in parts["c"]["details"]["rows"]}
    assert {"chordal-tier-worker", "chordal-tier-worker-p2"} <= scenarios
    assert "| row | measurement | value |" in done.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_cli_bench_rejects_an_unknown_row() -> None:
    import typer
    from typer.testing import CliRunner

    from chordal.cli.bench import register

    # Given: a command line with only the bench command
    cli = typer.Typer()
    register(cli)

    @cli.command()
    def other() -> None:
        """A second command, so that `bench` stays a subcommand."""

    # When: a row that does not exist is asked for
    result = CliRunner().invoke(cli, ["bench", "--only", "a,z"])

    # Then: it refuses before starting anything
    assert result.exit_code == 2
    assert "--only takes rows among a,b,c,d,e,f,g" in result.output
