"""Metrics, the queue exporter and the cost ledger, read as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chordal.broker import free_port
from chordal.stack import LocalStack

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[str, float]:
    """Every sample of the endpoint, keyed by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def fleet_total(stack: LocalStack, prefix: str) -> float:
    """A metric summed over every worker process's endpoint and every label set."""
    total = 0.0
    for port in stack.metrics_ports.values():
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        total += sum(v for k, v in samples.items() if k.startswith(prefix + "{"))
    return total


def test_every_worker_serves_metrics_and_they_move_after_a_job(
    stack: LocalStack, submit_and_wait
) -> None:
    before = {
        name: fleet_total(stack, name)
        for name in (
            "chordal_llm_requests_total",
            "chordal_jobs_total",
            "chordal_llm_cost_usd_total",
        )
    }

    result = submit_and_wait(agent="writer", input="Metrics, please.", tier="fast")

    assert set(stack.metrics_ports) >= {"router"}
    assert (
        fleet_total(stack, "chordal_llm_requests_total") == before["chordal_llm_requests_total"] + 1
    )
    assert fleet_total(stack, "chordal_jobs_total") == before["chordal_jobs_total"] + 1
    cost = fleet_total(stack, "chordal_llm_cost_usd_total") - before["chordal_llm_cost_usd_total"]
    assert cost == pytest.approx(result["cost_usd"])
    # Labels are bounded: no job id anywhere in any worker's output.
    for port in stack.metrics_ports.values():
        assert result["job_id"] not in json.dumps(scrape(f"http://127.0.0.1:{port}/metrics"))


@pytest.fixture
def exporter(stack: LocalStack) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "chordal.cli", "exporter", "--port", str(port), "--addr",
         "127.0.0.1"],
        env=stack.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                scrape(url)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_exporter_publishes_each_tier_queues_depth_for_autoscaling(exporter: str) -> None:
    samples = scrape(exporter)

    assert samples["chordal_queue_up{}"] == 1
    for queue in ("router", "tier.fast", "tier.balanced", "tier.premium"):
        assert samples[f"chordal_queue_depth{{queue={queue}}}"] >= 0
    assert any(k.startswith("chordal_breaker_state{") for k in samples)


def test_cost_report_shows_todays_calls(stack: LocalStack, submit_and_wait) -> None:
    result = submit_and_wait(agent="summarizer", input="Ledger me.", tenant="ledger-test")

    shown = subprocess.run(
        [sys.executable, "-m", "chordal.cli", "cost-report", "--since", "1d", "--format", "json"],
        env=stack.env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    (tenant,) = [t for t in report["tenants"] if t["tenant"] == "ledger-test"]
    assert tenant["requests"] == 1
    assert tenant["cost_usd"] == pytest.approx(result["cost_usd"], abs=1e-6)
    assert result["model"] in {m["model"] for m in report["models"]}


def test_worker_logs_hold_no_planted_pii_even_with_prompts_logged(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from agents.client import Client
    from tests.support import stack_settings
    from workers.tiers import Tier

    # Given: a worker told to log prompts and outputs in full, in JSON, and a job whose input
    # (which the simulator quotes back in its answer) plants an e-mail, a card and an API key
    settings = stack_settings(
        tmp_path_factory.mktemp("logs"), log_prompts=True, log_json=True, flower_port=0
    )
    planted = ["jane.roe@example.org", "4111 1111 1111 1111", "sk-proj-AbCdEf0123456789XyZ"]
    with LocalStack(settings, tiers=[Tier.FAST]) as stack:
        client = Client(settings=stack.settings)
        try:
            text = f"Write to {planted[0]}, card {planted[1]}, key {planted[2]}."
            job = {"agent": "writer", "input": text, "tier": "fast"}
            client.wait(client.submit(job), timeout=60)
        finally:
            client.app.close()
        logs = "".join(
            path.read_text(errors="replace")
            for path in (stack.settings.data_dir / "logs").glob("*.log")
            if not path.name.startswith("simulator")
        )

    # Then: the answer was logged in full, with every planted value redacted
    success = [json.loads(line) for line in logs.splitlines() if "succeeded in" in line]
    assert success
    assert "[EMAIL]" in success[-1]["message"]
    assert "[CARD]" in success[-1]["message"]
    for secret in planted:
        assert secret not in logs
