"""``chordal worker --processes N``: N worker processes under one supervisor.

One Python process runs one event loop and holds one GIL, so a tier worker uses one core at
most. With ``--processes N`` the command starts N copies of itself (each a whole worker: its own
Celery consumer, loop, heartbeat and leases) and supervises them:

* SIGTERM, SIGINT and SIGQUIT are passed on to every child (SIGINT as SIGTERM: the children share
  the terminal's process group and got it already; a second SIGINT would be Celery's cold
  shutdown). Each child then shuts down gracefully (``CHORDAL_SHUTDOWN_GRACE_S``).
* A child that exits while nobody asked it to stops the others: the command exits with that
  child's code (78 for a bad configuration, 69 for Redis unreachable, see ``agents/startup.py``),
  and the orchestrator restarts the whole worker. A worker that cannot work does not limp on
  with fewer processes.
* Child *i* serves ``/metrics`` on ``CHORDAL_METRICS_PORT`` + *i*.

Celery's own multi-process pool (prefork) would fork after the app loads, and its children run
one task at a time each; Chordal's processes each run hundreds of calls, so they are plain
processes of the same command. ``celery multi`` daemonizes and is meant for init scripts, not
for a container's PID 1.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

POLL_S = 0.2
PR_SET_PDEATHSIG = 1  # prctl(2)
FORWARDED = {
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGINT: signal.SIGTERM,
    signal.SIGQUIT: signal.SIGQUIT,
}


def default_processes() -> int:
    """The CPUs this process may use: the cgroup's CPU quota (a container's limit), else the
    CPUs it is allowed to run on."""
    allowed = len(os.sched_getaffinity(0))
    quota = _cgroup_quota(Path("/sys/fs/cgroup/cpu.max"))
    return max(1, min(allowed, quota)) if quota is not None else max(1, allowed)


def _cgroup_quota(path: Path) -> int | None:
    # cgroup v2: "max 100000" (no limit) or "<quota> <period>" in microseconds.
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


def supervise(command: Sequence[str], count: int, *, metrics_port: int | None = None) -> int:
    """Run ``count`` copies of ``command`` until they end; return the exit code the whole worker
    reports: the code of the first child that failed, else 0."""
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop_all(sent: signal.Signals) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(sent)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all(FORWARDED[signal.Signals(signum)])

    previous = {sig: signal.signal(sig, on_signal) for sig in FORWARDED}
    try:
        for index in range(count):
            if stopping:  # told to stop while starting: start no more
                break
            env = dict(os.environ)
            if metrics_port:
                env["CHORDAL_METRICS_PORT"] = str(metrics_port + index)
            children.append(
                subprocess.Popen(list(command), env=env, preexec_fn=_end_with_parent)  # noqa: PLW1509
            )
        return _wait(children, stop_all, lambda: stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _end_with_parent() -> None:
    # A supervisor killed outright (SIGKILL) must not leave its children running unsupervised:
    # Linux sends each SIGTERM when it dies, and they shut down as on any SIGTERM.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the children outlive a killed supervisor
        pass


def _wait(
    children: list[subprocess.Popen[bytes]],
    stop_all: Callable[[signal.Signals], None],
    asked_to_stop: Callable[[], bool],
) -> int:
    first_failure = 0
    seen: set[int] = set()
    stopped = False
    while True:
        alive = False
        for index, child in enumerate(children):
            returncode = child.poll()
            if returncode is None:
                alive = True
                continue
            if index in seen:
                continue
            seen.add(index)
            if returncode != 0 and not first_failure:
                first_failure = _exit_code(returncode)
            if not (stopped or asked_to_stop()):
                # One child ended on its own: the worker as a whole is done.
                stopped = True
                stop_all(signal.SIGTERM)
        if not alive:
            return first_failure
        time.sleep(POLL_S)


def _exit_code(returncode: int) -> int:
    # A child killed by a signal reports -N; a shell reports 128 + N.
    return 128 - returncode if returncode < 0 else returncode
