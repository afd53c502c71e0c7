"""D10: a worker that cannot work refuses to start, before it takes anything from its queue.

Each worker is a real process, started both ways an operator starts one (``chordal worker
--tier fast`` and plain ``celery -A workers.app worker -Q tier.fast -P threads``), against a
private Valkey. Must show: a LiteLLM proxy config with mistakes in it, one with nothing Chordal
can route to (embeddings, an unpriced deployment, a wildcard), or an agents file that is not
there makes the worker exit non-zero with one readable line per problem, and a job queued on
``tier.fast`` beforehand is still there, byte for byte, with no result and no dead letter; a
broker that does not answer makes it exit non-zero once ``startup_wait_s`` has passed, not
before and not much after.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import redis

from chordal.broker import EmbeddedBroker, free_port
from tests.drills.support import DrillCounts, report
from tests.support import LITELLM_CONFIG_INVALID, LITELLM_CONFIG_UNROUTABLE
from workers.app import create_app
from workers.credentials import masked
from workers.settings import Settings
from workers.tiers import AGENT_TASK, Tier

pytestmark = [pytest.mark.integration, pytest.mark.drill]

REPO = Path(__file__).resolve().parents[2]
WORKERS = {
    "chordal": [sys.executable, "-m", "chordal.cli", "worker", "--tier", "fast",
                "--processes", "1"],
    "celery": [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
               "-Q", Tier.FAST.queue, "-P", "threads"],
}  # fmt: skip
# Importing LiteLLM and Celery, reading the catalog: a worker's start on this 2-core machine
# takes 5-15 s, more while other work shares it.
START_ALLOWANCE_S = 45.0
STARTUP_WAIT_S = 3.0
EXIT_CONFIG, EXIT_UNAVAILABLE = os.EX_CONFIG, os.EX_UNAVAILABLE

CATALOG_LINES = [
    'catalog entry 1 (model_name "gpt-4o"): model_info.tier: got "gold"; expected one of fast, '
    "balanced, premium, local",
    'catalog entry 2 (model_name "claude-sonnet"): model_info.rpm: got -5; should be greater '
    "than 0",
]
UNROUTABLE_LINES = [
    'catalog entry 1 (model_name "embedding"): skipped: mode embedding: Chordal routes chat '
    "completions only",
    'catalog entry 3 (model_name "*"): skipped: a wildcard entry: Chordal routes to named '
    "models only; list each model",
]


@dataclass
class Exited:
    """How a worker process ended."""

    code: int
    seconds: float
    output: str


def run_worker(command: list[str], env: dict[str, str], *, timeout_s: float) -> Exited:
    """Run a worker until it exits; one still running after ``timeout_s`` is killed and fails
    the drill (it would be consuming)."""
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"worker still running after {timeout_s} s:\n{output.decode()[-3000:]}")
    return Exited(process.returncode, time.monotonic() - started, output.decode())


def worker_env(tmp_path: Path, **chordal: str) -> dict[str, str]:
    """This environment without any CHORDAL_* of its own, plus ``chordal`` (CHORDAL_ names)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CHORDAL_")}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        CHORDAL_PROFILE="offline",
        CHORDAL_DATA_DIR=str(tmp_path / "data"),
        CHORDAL_STARTUP_WAIT_S=str(STARTUP_WAIT_S),
    )
    env.update({f"CHORDAL_{name.upper()}": value for name, value in chordal.items()})
    return env


def snapshot(client: redis.Redis) -> dict[bytes, list[bytes]]:
    """Every list kombu keeps for tier.fast (one per priority step), message by message."""
    return {key: client.lrange(key, 0, -1) for key in client.scan_iter(b"tier.fast*")}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path) as server:
        yield server


@pytest.fixture
def queued_job(broker: EmbeddedBroker) -> str:
    """One agent task waiting on tier.fast before any worker starts; its task id."""
    app = create_app(Settings(broker_url=broker.url))
    try:
        job = {"agent": "summarizer", "input": "D10: this job must still be queued afterwards."}
        sent = app.send_task(AGENT_TASK, args=[job, {}, []], queue=Tier.FAST.queue)
        return str(sent.id)
    finally:
        app.close()


def test_d10_an_invalid_configuration_stops_the_worker_before_it_consumes(
    tmp_path: Path, broker: EmbeddedBroker, queued_job: str
) -> None:
    client = redis.Redis.from_url(broker.url)
    # Given: a job waiting on tier.fast, and LiteLLM proxy configs Chordal must refuse
    before = snapshot(client)
    assert sum(len(messages) for messages in before.values()) == 1
    catalog, unroutable = tmp_path / "litellm-proxy.yaml", tmp_path / "unroutable.yaml"
    catalog.write_text(LITELLM_CONFIG_INVALID)
    unroutable.write_text(LITELLM_CONFIG_UNROUTABLE)
    bad_catalog = worker_env(tmp_path, broker_url=broker.url, catalog_path=str(catalog))
    no_route = worker_env(tmp_path, broker_url=broker.url, catalog_path=str(unroutable))
    no_agents = worker_env(tmp_path, broker_url=broker.url, agents_path=str(tmp_path / "none"))
    started = time.monotonic()

    # When: a fast worker starts, each way, on the bad catalog; once on the catalog with nothing
    # to route to; and once on a missing agents file
    runs = {
        f"{way}/catalog": run_worker(command, bad_catalog, timeout_s=START_ALLOWANCE_S * 2)
        for way, command in WORKERS.items()
    }
    runs["chordal/unroutable"] = run_worker(
        WORKERS["chordal"], no_route, timeout_s=START_ALLOWANCE_S * 2
    )
    runs["celery/agents"] = run_worker(WORKERS["celery"], no_agents, timeout_s=START_ALLOWANCE_S)

    # Then: every one exited with EX_CONFIG, saying what is wrong in a line per problem...
    for name, run in runs.items():
        assert run.code == EXIT_CONFIG, f"{name} exited {run.code}:\n{run.output[-3000:]}"
        assert "chordal worker ready" not in run.output, f"{name} got ready:\n{run.output}"
        assert " ready." not in run.output, f"Celery called {name} ready:\n{run.output}"
        assert "input_value=" not in run.output, f"{name} printed pydantic's dump"
        lines = [line.strip() for line in run.output.splitlines()]
        if name.endswith("catalog"):
            assert all(line in lines for line in CATALOG_LINES), run.output[-3000:]
        elif name.endswith("unroutable"):
            assert all(line in lines for line in UNROUTABLE_LINES), run.output[-3000:]
            assert f"catalog {unroutable}: no deployment in the catalog can be routed to:" in (
                run.output
            )
        else:
            assert f"cannot read agents file {tmp_path / 'none'}" in run.output
    # ...and the job is still queued, untouched: not taken, failed, retried nor dead-lettered
    assert snapshot(client) == before
    assert not client.exists(f"celery-task-meta-{queued_job}")
    assert not client.hlen("unacked")
    assert not client.llen("chordal:dead_letter")
    report(
        DrillCounts(
            drill="D10 fail fast: invalid configuration",
            accepted=sum(len(messages) for messages in snapshot(client).values()),
            terminal=0,
            seconds=time.monotonic() - started,
            extra={
                "exit_codes": {name: run.code for name, run in runs.items()},
                "seconds_to_exit": {name: round(run.seconds, 1) for name, run in runs.items()},
            },
        )
    )
    client.close()


LOG_TIME = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ agents\.startup: "


def _logged_at(output: str, message: str) -> datetime:
    found = re.search(LOG_TIME + re.escape(message), output, flags=re.MULTILINE)
    assert found, f"no {message!r} in:\n{output[-3000:]}"
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")


@pytest.mark.parametrize("way", list(WORKERS))
def test_d10_an_unreachable_broker_stops_the_worker_after_the_bounded_wait(
    tmp_path: Path, way: str
) -> None:
    # Given: nothing listens where the broker should be
    url = f"redis://:unused-password@127.0.0.1:{free_port()}/0"
    env = worker_env(tmp_path, broker_url=url)

    # When: a fast worker starts
    run = run_worker(WORKERS[way], env, timeout_s=STARTUP_WAIT_S + START_ALLOWANCE_S)

    # Then: it waited startup_wait_s for Redis, no more, then exited with EX_UNAVAILABLE
    assert run.code == EXIT_UNAVAILABLE, f"exited {run.code}:\n{run.output[-3000:]}"
    assert f"no answer within {STARTUP_WAIT_S:g} s (CHORDAL_STARTUP_WAIT_S)" in run.output
    assert f"broker and result backend at {masked(url)}" in run.output
    assert "unused-password" not in run.output
    waited = (
        _logged_at(run.output, "chordal worker cannot start")
        - _logged_at(run.output, f"waiting up to {STARTUP_WAIT_S:g} s for broker and result")
    ).total_seconds()
    assert STARTUP_WAIT_S - 0.5 <= waited <= STARTUP_WAIT_S + 2.0
    assert run.seconds < STARTUP_WAIT_S + START_ALLOWANCE_S
    report(
        DrillCounts(
            drill=f"D10 fail fast: Redis unreachable ({way} worker)",
            accepted=0,
            terminal=0,
            seconds=run.seconds,
            extra={
                "exit_codes": {way: run.code},
                "seconds_to_exit": {way: round(run.seconds, 1)},
                "seconds_waiting_for_redis": round(waited, 1),
            },
        )
    )


@pytest.mark.parametrize("way", list(WORKERS))
def test_d10_a_redis_without_a_password_is_refused(tmp_path: Path, way: str) -> None:
    # Given: a broker URL with no password (where it points does not matter: refused first)
    url = f"redis://127.0.0.1:{free_port()}/0"

    # When: a fast worker starts with it, then with the opt-out for a Redis without AUTH
    refused = run_worker(WORKERS[way], worker_env(tmp_path, broker_url=url),
                         timeout_s=START_ALLOWANCE_S)  # fmt: skip
    allowed = run_worker(WORKERS[way],
                         worker_env(tmp_path, broker_url=url, allow_no_password="true"),
                         timeout_s=STARTUP_WAIT_S + START_ALLOWANCE_S)  # fmt: skip

    # Then: refused at once with EX_CONFIG, naming the setting; allowed, it goes on to wait
    assert refused.code == EXIT_CONFIG, f"exited {refused.code}:\n{refused.output[-3000:]}"
    assert "CHORDAL_BROKER_URL (redis://127.0.0.1" in refused.output
    assert "has no password" in refused.output
    assert allowed.code == EXIT_UNAVAILABLE, f"exited {allowed.code}:\n{allowed.output[-3000:]}"
