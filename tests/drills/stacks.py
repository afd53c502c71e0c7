"""Stacks and loads the drills share."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.client import Client
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import ChildProcess, LocalStack
from tests.support import LATENCY_SCALE, stack_settings
from workers.errors import BrokerUnavailable
from workers.recovery import HELD_PREFIX
from workers.settings import Settings
from workers.tiers import Tier

DRILL_TEAMS = Path(__file__).parent / "teams.yaml"


def drill_settings(data_dir: Path, **overrides: Any) -> Settings:
    """A private stack's settings with the drills' teams."""
    return stack_settings(data_dir, agents_path=DRILL_TEAMS, **overrides)


@contextmanager
def two_fast_workers(settings: Settings) -> Iterator[LocalStack]:
    """A running stack with two fast-tier workers: the drills stop or kill one of them."""
    with LocalStack(settings, tiers=[Tier.FAST]) as running:
        running.add_worker(Tier.FAST)
        running.wait_until_consuming()
        yield running


def slow_calls(simulator: SimulatorAdmin, seconds: float) -> None:
    """Every model answers in ``seconds`` (the stack scales catalog latencies down)."""
    simulator.fault("*", latency_median_s=seconds / LATENCY_SCALE, latency_sigma=0.0)


def submit_mix(client: Client, *, plain: int, teams: int) -> list[str]:
    """``plain`` single jobs pinned to fast and ``teams`` fast-five teams (six calls each)."""
    ids = [
        client.submit({"agent": "summarizer", "input": f"Drill job {n}: keep it.", "tier": "fast"})
        for n in range(plain)
    ]
    ids += [
        client.submit({"team": "fast-five", "input": f"Drill team {n}: five views, one answer."})
        for n in range(teams)
    ]
    return ids


def held(stack: LocalStack, child: ChildProcess) -> int:
    """How many messages the worker process ``child`` holds now (its held hash)."""
    client = Client(settings=stack.settings).app.backend.client
    keys = client.keys(f"{HELD_PREFIX}*:{child.process.pid}:*")
    return sum(int(client.hlen(key)) for key in keys)


def sigkill(stack: LocalStack, child: ChildProcess) -> None:
    """Kill a worker outright, as the OOM killer or a node loss would."""
    os.killpg(child.process.pid, signal.SIGKILL)
    child.process.wait()
    stack.children.remove(child)


def fast_workers(stack: LocalStack) -> list[ChildProcess]:
    """The stack's fast tier workers."""
    return [child for child in stack.children if child.name.startswith("fast")]


@dataclass
class Producer:
    """Submits ``count`` jobs from a thread of its own while a drill does harm; a submit the
    broker refuses (BrokerUnavailable) is counted, not accepted."""

    client: Client
    job: Callable[[int], dict[str, Any]]
    count: int
    pause_s: float = 0.0
    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    _thread: threading.Thread | None = None

    def start(self) -> Producer:
        """Begin submitting."""
        self._thread = threading.Thread(target=self._run, name="drill-producer")
        self._thread.start()
        return self

    def wait_accepted(self, n: int) -> None:
        """Block until ``n`` jobs were accepted."""
        while len(self.accepted) < n:
            time.sleep(0.05)

    def join(self) -> None:
        """Block until every job was submitted (or refused)."""
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        for n in range(self.count):
            try:
                self.accepted.append(self.client.submit(self.job(n)))
            except BrokerUnavailable:
                self.refused += 1
            if self.pause_s:
                time.sleep(self.pause_s)
