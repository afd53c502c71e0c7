"""The Locust load test (``tests/load``): a short run against a private stack, through the
gateway and through the producer client, finishes every job and writes its reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.load.run import run, summary

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_a_short_load_run_finishes_every_job_through_both_entry_points(tmp_path: Path) -> None:
    # Four users: Locust splits them evenly, two gateway users and two producers.
    outcome = run(duration="30s", users=4, spawn_rate=4, out=tmp_path)

    rows = {row.name: row for row in outcome.rows()}
    assert outcome.exit_code == 0, summary(list(rows.values()))
    assert rows["Aggregated"].failures == 0
    # The gateway's two requests, and each user kind's end-to-end job.
    expected = {"/v1/jobs": "POST", "/v1/jobs/[id]": "GET", "gateway job": "JOB",
                "producer job": "CELERY"}  # fmt: skip
    for name, kind in expected.items():
        assert rows[name].type == kind
        assert rows[name].requests > 0, name
        assert rows[name].failures == 0, name
    # The stop timeout lets jobs in flight at the end finish, so every submitted job was timed.
    assert rows["gateway job"].requests == rows["/v1/jobs"].requests
    for suffix in ("failures", "exceptions", "stats_history"):
        assert (tmp_path / f"chordal_{suffix}.csv").exists()
    report = outcome.html.read_text()
    assert "gateway job" in report
    assert "producer job" in report
