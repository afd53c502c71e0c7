"""The concurrency benchmark runs end to end at a tiny size (behaviour only, never speed)."""

from __future__ import annotations

import json
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
