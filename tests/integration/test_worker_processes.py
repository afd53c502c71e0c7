"""``chordal worker --tier fast --processes 2``: two whole workers under one supervisor."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from agents.client import Client
from chordal.broker import free_port
from chordal.stack import LocalStack
from tests.support import stack_settings, wait_for
from workers.recovery import WORKERS_KEY

pytestmark = pytest.mark.integration


@pytest.fixture
def router_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = stack_settings(tmp_path_factory.mktemp("processes"), shutdown_grace_s=5)
    with LocalStack(settings, tiers=[]) as stack:
        yield stack


def _beating(client: redis.Redis) -> set[str]:
    return {m.decode() for m in client.zrange(WORKERS_KEY, 0, -1)}


@pytest.mark.timeout(300)
def test_two_processes_serve_one_tier_and_stop_together(
    router_only: LocalStack, tmp_path: Path
) -> None:
    client = Client(settings=router_only.settings)
    broker = redis.Redis.from_url(str(router_only.settings.broker_url))
    before = _beating(broker)
    env = router_only.env() | {"CHORDAL_METRICS_PORT": str(free_port())}
    log = (tmp_path / "fast.log").open("wb")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "chordal.cli", "worker", "--tier", "fast", "--processes", "2"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        # Given: the worker's two processes each beat as a worker of their own
        wait_for(lambda: len(_beating(broker) - before) == 2, timeout=90, what="two heartbeats")
        children = _beating(broker) - before
        assert len({member.split(":")[1] for member in children}) == 2  # two pids

        # When: fast-tier jobs are submitted
        jobs = [client.submit({"agent": "summarizer", "input": f"Part {n}.", "tier": "fast"})
                for n in range(6)]  # fmt: skip
        results = [client.wait(job, timeout=120) for job in jobs]

        # ... and the worker gets SIGTERM
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=60)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        log.close()
        client.app.close()

    # Then: the jobs were served, and both processes left the fleet and the worker exited 0
    assert [r["tier"] for r in results] == ["fast"] * 6
    assert code == 0, (tmp_path / "fast.log").read_text()[-3000:]
    assert not (_beating(broker) & children)
