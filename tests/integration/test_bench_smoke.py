"""The benchmarks run end to end at a tiny size (behaviour only, never speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CALLS = 20


@pytest.mark.timeout(300)
def test_bench_concurrency_reports_bare_and_tier_worker_rows(tmp_path: Path) -> None:
    # Given: a report path
    report = tmp_path / "bench.json"

    # When: the benchmark runs at a tiny size without the naive baselines
    command = [
        sys.executable, "-m", "bench.concurrency",
        "--calls", str(CALLS), "--concurrency", "10", "--latency", "0.05",
        "--skip-naive", "--json", str(report),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False
    )

    # Then: it succeeds and reports every call of both scenarios at a positive rate
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["scenario"]: row for row in json.loads(report.read_text())["rows"]}
    for scenario in ("bare-asyncio", "chordal-tier-worker"):
        assert rows[scenario]["calls"] == CALLS
        assert rows[scenario]["ok"] == CALLS
        assert rows[scenario]["calls_per_s"] > 0
    assert "| chordal-tier-worker | 10 | 20 |" in done.stdout


@pytest.mark.timeout(180)
def test_bench_router_reports_chordal_and_litellm_rows(tmp_path: Path) -> None:
    # Given: a report path and LiteLLM's bundled price map (no download)
    report = tmp_path / "router.json"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}

    # When: the router benchmark runs in its quick mode
    command = [sys.executable, "-m", "bench.router", "--quick", "--json", str(report)]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=150, check=False
    )

    # Then: it succeeds with a timed chordal row, and every LiteLLM strategy is either timed
    # or named in a note saying why it was skipped
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(report.read_text())
    rows = {(row["implementation"], row["strategy"]): row for row in data["rows"]}
    chordal = rows[("chordal", "choose")]
    assert chordal["models"] == 10
    assert chordal["calls"] > 0
    assert chordal["p50_us"] <= chordal["p99_us"]
    assert data["token_count"]["calls"] > 0
    for strategy in data["params"]["strategies"]:
        timed = ("litellm", strategy) in rows
        assert timed or any(strategy in note for note in data["notes"]), strategy
    assert any(implementation == "litellm" for implementation, _ in rows)
    assert "| chordal | 10 |" in done.stdout
    assert "p99 at 100 models: not measured" in done.stdout
