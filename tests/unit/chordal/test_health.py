"""``chordal health``: which endpoint each container role is checked on, and the verdicts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chordal.cli import cli
from chordal.health import Probe, check, pid1_argv, probe_for, role_of

# The commands compose.yaml and the k8s manifests start, as PID 1 sees them.
WORKER = ["/opt/venv/bin/python", "/opt/venv/bin/chordal", "worker", "--tier", "fast"]
ROUTER = ["/opt/venv/bin/chordal", "worker", "--router"]
GATEWAY = ["/opt/venv/bin/chordal", "gateway", "--host", "0.0.0.0", "--port", "8081"]
EXPORTER = ["/opt/venv/bin/chordal", "exporter", "--port=9900", "--addr", "0.0.0.0"]
SIMULATOR = ["python", "-m", "chordal.simulator", "--host", "0.0.0.0", "--port", "8765"]
FLOWER = ["/opt/venv/bin/celery", "--app", "workers.app", "flower", "--port=5555"]


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (WORKER, "worker"),
        (ROUTER, "worker"),
        (GATEWAY, "gateway"),
        (EXPORTER, "exporter"),
        (SIMULATOR, "simulator"),
        (["chordal", "sim"], "simulator"),
        (FLOWER, "flower"),
        (["chordal", "bench"], None),
        (["chordal", "submit", "summarizer", "a worker's text"], None),
        ([], None),
    ],
)
def test_role_is_read_from_the_command(argv: list[str], role: str | None) -> None:
    assert role_of(argv) == role


def test_each_role_is_probed_on_its_own_endpoint() -> None:
    env = {"CHORDAL_METRICS_PORT": "9100"}
    assert probe_for(WORKER, env) == Probe("worker", "http://127.0.0.1:9100/metrics")
    assert probe_for(GATEWAY, {}) == Probe("gateway", "http://127.0.0.1:8081/healthz")
    assert probe_for(EXPORTER, {}) == Probe("exporter", "http://127.0.0.1:9900/healthz")
    assert probe_for(SIMULATOR, {}) == Probe("simulator", "http://127.0.0.1:8765/health")
    assert probe_for(FLOWER, {}) == Probe("flower", "http://127.0.0.1:5555/healthcheck")


def test_defaults_when_the_command_names_no_port() -> None:
    gateway = ["chordal", "gateway"]
    assert probe_for(gateway, {})
    assert probe_for(gateway, {}) == Probe("gateway", "http://127.0.0.1:8080/healthz")
    assert probe_for(gateway, {"CHORDAL_GATEWAY_PORT": "9000"}) == Probe(
        "gateway", "http://127.0.0.1:9000/healthz"
    )
    assert probe_for(["chordal", "exporter"], {}) == Probe(
        "exporter", "http://127.0.0.1:9808/healthz"
    )


def test_a_worker_without_a_metrics_port_and_a_one_off_have_nothing_to_probe() -> None:
    assert probe_for(WORKER, {}) is None
    assert probe_for(["chordal", "bench"], {}) is None


def test_a_port_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(ValueError, match="nine"):
        probe_for(["chordal", "exporter", "--port", "nine"], {})


def test_pid1_argv_splits_on_nul(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/venv/bin/chordal\0worker\0--tier\0fast\0")
    assert pid1_argv(cmdline) == ["/opt/venv/bin/chordal", "worker", "--tier", "fast"]
    assert pid1_argv(tmp_path / "absent") == []


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_check_gives_the_verdict_of_the_endpoint(server: int) -> None:
    assert check(Probe("exporter", f"http://127.0.0.1:{server}/healthz"), 2)[0]
    ok, line = check(Probe("flower", f"http://127.0.0.1:{server}/healthcheck"), 2)
    assert not ok
    assert "503" in line


def test_check_of_a_closed_port_is_unhealthy() -> None:
    # Port 1 (tcpmux): nothing listens there, and only root could bind it.
    ok, line = check(Probe("gateway", "http://127.0.0.1:1/healthz"), 2)
    assert not ok
    assert "did not answer" in line


def test_the_command_exits_1_when_unhealthy_and_0_when_healthy(server: int) -> None:
    runner = CliRunner()
    healthy = runner.invoke(cli, ["health", "--", "chordal", "exporter", "--port", str(server)])
    assert healthy.exit_code == 0, healthy.output
    assert "healthy" in healthy.output
    down = runner.invoke(cli, ["health", "--", "celery", "flower", f"--port={server}"])
    assert down.exit_code == 1
    assert "503" in down.output
    one_off = runner.invoke(cli, ["health", "--", "chordal", "bench"])
    assert one_off.exit_code == 0
    assert "nothing to probe" in one_off.output
