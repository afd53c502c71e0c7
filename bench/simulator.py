"""The provider simulator for a benchmark: one subprocess, fixed latency, stats over HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.procs import BenchError, Child, Children, child_env
from chordal.simulator.admin import SimulatorAdmin

START_TIMEOUT_S = 60.0


def write_config(path: Path, latency_s: float) -> Path:
    """A simulator config where every model answers after exactly ``latency_s``."""
    config = {
        "seed": 0,
        "latency_scale": 1.0,
        "default": {"latency_median_s": latency_s, "latency_sigma": 0.0},
        "models": {},
    }
    path.write_text(json.dumps(config))
    return path


def start_simulator(
    children: Children, workdir: Path, port: int, latency_s: float
) -> tuple[SimulatorAdmin, Child]:
    """Start the simulator on ``port`` and wait until it answers; its process is returned too,
    so a benchmark can read the simulator's own CPU time."""
    config = write_config(workdir / "simulator.json", latency_s)
    args = ["-m", "chordal.simulator", "--port", str(port), "--config", str(config)]
    child = children.spawn("simulator", args, child_env())
    admin = SimulatorAdmin(f"http://127.0.0.1:{port}")
    _wait_healthy(child, admin)
    return admin, child


def _wait_healthy(child: Child, admin: SimulatorAdmin) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        child.check_alive()
        if admin.healthy():
            return
        time.sleep(0.1)
    raise BenchError(f"simulator not answering after {START_TIMEOUT_S} s:\n{child.tail()}")
