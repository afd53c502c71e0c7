"""``chordal worker --processes N``'s supervisor (``chordal.processes``), with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chordal.processes import _cgroup_quota, default_processes, supervise
from tests.support import wait_for

# A stand-in worker: records its metrics port and pid, fails if told to (once CHILDREN have
# started), else waits for SIGTERM and records that it got it.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    out = Path(sys.argv[1])
    port = os.environ["CHORDAL_METRICS_PORT"]
    (out / f"port-{port}").write_text(str(os.getpid()))
    if port == os.environ.get("FAIL_PORT"):
        # Fails its start once the others have started (else the supervisor starts no more).
        deadline = time.monotonic() + 10
        while len(list(out.glob("port-*"))) < int(os.environ.get("CHILDREN", "1")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        sys.exit(78)
    def stop(signum, frame):
        (out / f"stopped-{port}").write_text(signal.Signals(signum).name)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(0.05)
    """
)


def _child(out: Path) -> list[str]:
    return [sys.executable, "-c", CHILD, str(out)]


def test_a_child_that_fails_stops_the_others_and_its_code_is_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: three children on ports 9100-9102, the second exits 78 at start
    monkeypatch.setenv("FAIL_PORT", "9101")
    monkeypatch.setenv("CHILDREN", "3")

    # When: the supervisor runs them
    code = supervise(_child(tmp_path), 3, metrics_port=9100)

    # Then: it reports 78, each child had its own port, and the others were stopped
    assert code == 78
    assert sorted(p.name for p in tmp_path.glob("port-*")) == [
        "port-9100", "port-9101", "port-9102",
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("stopped-*")) == ["stopped-9100", "stopped-9102"]


def _supervisor(tmp_path: Path, count: int) -> subprocess.Popen[bytes]:
    script = (
        "import sys; from chordal.processes import supervise; "
        f"sys.exit(supervise({_child(tmp_path)!r}, {count}, metrics_port=9200))"
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    wait_for(lambda: len(list(tmp_path.glob("port-*"))) == count, timeout=20)
    return process


def test_sigterm_to_the_supervisor_stops_every_child_gracefully(tmp_path: Path) -> None:
    # Given: a supervisor with two children running
    supervisor = _supervisor(tmp_path, 2)

    # When: it gets SIGTERM (what Kubernetes sends PID 1)
    supervisor.send_signal(signal.SIGTERM)

    # Then: each child got SIGTERM and the worker exits 0
    assert supervisor.wait(timeout=20) == 0
    stopped = {p.name: p.read_text() for p in tmp_path.glob("stopped-*")}
    assert stopped == {"stopped-9200": "SIGTERM", "stopped-9201": "SIGTERM"}


def test_children_of_a_killed_supervisor_are_stopped_too(tmp_path: Path) -> None:
    # Given: a supervisor with two children running
    supervisor = _supervisor(tmp_path, 2)
    pids = [int(p.read_text()) for p in tmp_path.glob("port-*")]

    # When: the supervisor is killed outright
    supervisor.kill()
    supervisor.wait(timeout=10)

    # Then: its children get SIGTERM from the kernel and end, not left running unsupervised
    wait_for(lambda: len(list(tmp_path.glob("stopped-*"))) == 2, timeout=20)
    for pid in pids:
        wait_for(lambda pid=pid: not _alive(pid), timeout=20)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.mark.parametrize(
    ("content", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1), ("garbled", None)],
)
def test_a_containers_cpu_quota_bounds_the_default(
    tmp_path: Path, content: str, expected: int | None
) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(content)

    assert _cgroup_quota(path) == expected


def test_the_default_is_at_least_one_and_at_most_the_cpus_allowed() -> None:
    assert 1 <= default_processes() <= len(os.sched_getaffinity(0))
