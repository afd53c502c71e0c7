"""Child processes of a benchmark run: each in its own session, always stopped at the end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chordal.stack import ChildProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 15.0


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # utime and stime are fields 14 and 15 of proc(5); 3 is the first after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


class BenchError(RuntimeError):
    """A benchmark component failed; the message carries its log tail."""


class Child(ChildProcess):
    """A started subprocess (see :class:`chordal.stack.ChildProcess`) with its CPU time."""

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system, all threads) the process and its children (a worker's
        processes under ``--processes N``) used so far; None off Linux."""
        total = 0.0
        pids = [self.process.pid]
        seen: set[int] = set()
        while pids:
            pid = pids.pop()
            if pid in seen:
                continue
            seen.add(pid)
            own = _cpu_s(pid)
            if own is None:
                if pid == self.process.pid:
                    return None
                continue  # a child that ended meanwhile
            total += own
            pids += _children(pid)
        return total

    def check_alive(self) -> None:
        """Raise BenchError with the log tail if the process has exited."""
        if self.process.poll() is not None:
            code = self.process.returncode
            raise BenchError(f"{self.name} exited with {code}:\n{self.tail()}")


def last_json_line(child: Child) -> dict[str, Any]:
    """The last JSON object ``child`` printed (its result); BenchError with the log tail if none."""
    for line in reversed(child.log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise BenchError(f"{child.name} printed no result:\n{child.tail()}")


def child_env(**extra: str) -> dict[str, str]:
    """This environment without any CHORDAL_* setting of the caller's shell, plus ``extra``."""
    # A developer's shell may point CHORDAL_BROKER_URL at a shared broker; the bench must only
    # ever talk to the private one it starts.
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHORDAL_")}
    # LiteLLM otherwise tries to download its price map at import (no internet here).
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Children:
    """Every subprocess of the run; :meth:`stop_all` ends them whatever happened."""

    log_dir: Path
    running: list[Child] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        """Start ``python args...`` in its own session with output to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            # A new session keeps Ctrl-C away from the children: the bench stops them itself,
            # in order, instead of racing their own signal handlers.
            process = subprocess.Popen(
                [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=REPO_ROOT, start_new_session=True,
            )  # fmt: skip
        child = Child(name, process, log)
        self.running.append(child)
        return child

    def stop(self, child: Child) -> None:
        """SIGTERM the child's process group, then SIGKILL it if it outlives the timeout."""
        if child in self.running:
            self.running.remove(child)
        process = child.process
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()

    def stop_all(self) -> None:
        """Stop every running child, newest first (workers before the simulator)."""
        for child in reversed(list(self.running)):
            self.stop(child)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
