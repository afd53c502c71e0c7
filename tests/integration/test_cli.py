"""The ``chordal`` command as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chordal.broker import free_port
from chordal.stack import LocalStack
from tests.support import LATENCY_SCALE

pytestmark = pytest.mark.integration


def _chordal(
    *args: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chordal.cli", *args], env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_demo_runs_a_job_end_to_end_and_exits_zero(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHORDAL_")} | {
        "CHORDAL_DATA_DIR": str(tmp_path),
        "CHORDAL_SIM_LATENCY_SCALE": str(LATENCY_SCALE),
    }

    done = _chordal("demo", "--json", env=env)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["team"] == "research"
    assert result["succeeded"] == 3
    assert {m["tier"] for m in result["members"]} == {"fast", "balanced", "premium"}
    assert result["cost_usd"] > 0
    assert result["tokens_in"] > 0
    assert "success" in done.stderr
    assert "starting embedded Valkey broker" in done.stderr
    assert not list(tmp_path.glob("valkey-*")), "the demo removes its broker's data on exit"


def test_submit_wait_and_status_print_the_result(stack: LocalStack) -> None:
    env = stack.env()

    submitted = _chordal("submit", "classifier", "Is this a refund?", "--wait", "--json", env=env)
    assert submitted.returncode == 0, submitted.stderr
    result = json.loads(submitted.stdout)

    status = _chordal("status", result["job_id"], "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "SUCCESS"


def test_submit_stream_prints_the_tokens_as_they_arrive(stack: LocalStack) -> None:
    streamed = _chordal("submit", "summarizer", "Why ack late?", "--stream", env=stack.env())

    assert streamed.returncode == 0, streamed.stderr
    assert "ROUTED" in streamed.stderr
    assert "SUCCESS" in streamed.stderr
    # The answer, token by token on stdout, then the result's table with the same answer.
    assert streamed.stdout.startswith("[simulated] Response from the Chordal provider simulator")


def test_submit_refuses_bad_input_with_the_field_named(stack: LocalStack) -> None:
    done = _chordal("submit", "summarizer", "x", "--max-cost-usd", "-1", env=stack.env())

    assert done.returncode == 1
    assert "max_cost_usd" in done.stderr


def test_worker_without_a_broker_says_what_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORDAL_")}

    done = _chordal("worker", "--tier", "fast", env=env, timeout=60)

    assert done.returncode == 1
    assert "CHORDAL_BROKER_URL" in done.stderr


@pytest.mark.timeout(300)
def test_dev_serves_jobs_until_interrupted_then_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORDAL_")} | {
        "CHORDAL_DATA_DIR": str(tmp_path),
        "CHORDAL_SIM_LATENCY_SCALE": str(LATENCY_SCALE),
        "CHORDAL_FLOWER_PORT": str(free_port()),
        "CHORDAL_GATEWAY_PORT": str(free_port()),
    }
    dev = subprocess.Popen(
        [sys.executable, "-m", "chordal.cli", "dev"], env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        flower = _wait_for_line(dev, "flower: http")
        assert f":{env['CHORDAL_FLOWER_PORT']}" in flower
        # gateway: http://127.0.0.1:PORT (API key KEY, tenant default)
        gateway = _wait_for_line(dev, "gateway: http").split()
        url, key = gateway[1], gateway[4].rstrip(",")
        assert url.endswith(f":{env['CHORDAL_GATEWAY_PORT']}")
        posted = httpx.post(f"{url}/v1/jobs", json={"agent": "summarizer", "input": "hi"},
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
        assert posted.status_code == 202, posted.text
        sourced = _wait_for_line(dev, "source ").split()[1]
        broker_url = Path(sourced).read_text().split("CHORDAL_BROKER_URL=", 1)[1].split()[0]
        assert oct(Path(sourced).stat().st_mode & 0o777) == "0o600"

        submitted = _chordal(
            "submit", "summarizer", "hello", "--wait", "--json",
            env=env | {"CHORDAL_BROKER_URL": broker_url},
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads(submitted.stdout)["agent"] == "summarizer"
    finally:
        dev.send_signal(signal.SIGINT)
        returncode = dev.wait(timeout=60)
        assert dev.stderr is not None
        dev.stderr.close()

    assert returncode == 0
    assert not _processes_mentioning(str(tmp_path)), "dev left child processes running"


def _wait_for_line(process: subprocess.Popen[str], prefix: str) -> str:
    assert process.stderr is not None
    for line in process.stderr:
        if prefix in line:
            return line.strip()
    raise AssertionError(f"`chordal dev` exited ({process.wait()}) before printing {prefix!r}")


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found
