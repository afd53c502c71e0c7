"""The composed stack of ``compose.yaml``, built and run by podman (or Docker) for ``make e2e``.

:class:`ComposeStack` builds the image from the project's Dockerfile, generates every password
and a gateway key (the compose file has no defaults), brings the services up under a project
name of its own with host ports picked free, and always tears down: ``down -v``, after keeping
every container's log in ``log_dir``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chordal.broker import free_port
from chordal.gateway.keys import digest, new_key

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "chordal-e2e"
IMAGE = "chordal:local"
# Everything but Grafana (no stand-in image here; nothing in the test reads it).
SERVICES = (
    "valkey", "simulator", "router", "fast", "balanced", "premium",
    "gateway", "exporter", "flower", "prometheus",
)  # fmt: skip
WORKERS = ("router", "fast", "balanced", "premium")
# The tenant compose.yaml gives a budget.
TENANT = "default"


SUMMARY: dict[str, object] = {}
"""What the tests measured, printed as the summary line (``e2e PASSED: key=value ...``)."""


class StackError(RuntimeError):
    """A command of the container engine failed; the message has its output."""


@dataclass(frozen=True)
class Engine:
    """The container engine and its compose command."""

    name: str
    compose: tuple[str, ...]

    @classmethod
    def find(cls) -> Engine:
        """podman with podman-compose where present (this machine), else Docker's."""
        if shutil.which("podman") and shutil.which("podman-compose"):
            return cls("podman", ("podman-compose",))
        if shutil.which("docker"):
            return cls("docker", ("docker", "compose"))
        raise StackError(
            "no container engine: install podman and podman-compose (as root, "
            "../shared/containers/standin-images does it here) or Docker"
        )


def run(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 600
) -> str:
    """Run ``command`` from the project root; its stdout, or StackError with its output."""
    done = subprocess.run(
        list(command), cwd=ROOT, env=dict(env) if env else None, capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise StackError(
            f"{' '.join(command)} exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


@dataclass
class ComposeStack:
    """One run of compose.yaml; the attributes are what the tests reach it by."""

    log_dir: Path
    engine: Engine = field(default_factory=Engine.find)
    api_key: str = field(default_factory=new_key)
    flower_password: str = field(default_factory=lambda: secrets.token_hex(16))
    ports: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ports = {name: free_port() for name in ("gateway", "flower", "prometheus", "grafana")}
        self.env = {
            **os.environ,
            "VALKEY_PASSWORD": secrets.token_hex(24),
            "CHORDAL_FLOWER_PASSWORD": self.flower_password,
            "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
            "CHORDAL_GATEWAY_KEYS": json.dumps({digest(self.api_key): TENANT}),
            "CHORDAL_GATEWAY_HOST_PORT": str(self.ports["gateway"]),
            "CHORDAL_FLOWER_HOST_PORT": str(self.ports["flower"]),
            "PROMETHEUS_HOST_PORT": str(self.ports["prometheus"]),
            "GRAFANA_HOST_PORT": str(self.ports["grafana"]),
        }

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def compose(self, *args: str, timeout: float = 600) -> str:
        command = [*self.engine.compose, "-p", PROJECT, "-f", str(ROOT / "compose.yaml"), *args]
        return run(command, env=self.env, timeout=timeout)

    def build(self) -> None:
        """The image from the Dockerfile, as compose.yaml names it. podman builds OCI images
        unless told otherwise, and OCI has no HEALTHCHECK."""
        started = time.monotonic()
        extra = ["--format", "docker"] if self.engine.name == "podman" else []
        run([self.engine.name, "build", *extra, "-t", IMAGE, str(ROOT)], timeout=1800)
        self.timings["build_s"] = time.monotonic() - started

    def up(self) -> None:
        """Every service but Grafana, then wait until the gateway is ready."""
        started = time.monotonic()
        self.compose("up", "-d", *SERVICES)
        wait_until(lambda: http_status(f"{self.gateway}/readyz") == 200, 180, "gateway ready")
        self.timings["up_s"] = time.monotonic() - started

    def containers(self, service: str) -> list[str]:
        """Ids of ``service``'s running containers."""
        out = run([
            self.engine.name, "ps", "-q",
            "--filter", f"label=com.docker.compose.project={PROJECT}",
            "--filter", f"label=com.docker.compose.service={service}",
        ])  # fmt: skip
        return out.split()

    def healthy(self, service: str) -> tuple[bool, str]:
        """Run the image's HEALTHCHECK (``chordal health``) in ``service``'s container now.

        podman runs health checks from systemd timers, which this machine lacks, so the test
        runs the check itself; Docker runs it on its own and reports the status.
        """
        (container,) = self.containers(service)
        if self.engine.name == "podman":
            done = subprocess.run(
                ["podman", "healthcheck", "run", container],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            return done.returncode == 0, (done.stdout + done.stderr).strip()
        status = run(["docker", "inspect", "--format", "{{.State.Health.Status}}", container])
        return status.strip() == "healthy", status.strip()

    def down(self) -> None:
        """Keep every container's log, then remove the containers, network and volumes."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            for container in self.containers_any(service):
                logs = subprocess.run(
                    [self.engine.name, "logs", "--tail", "400", container],
                    capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                (self.log_dir / f"{service}-{container[:12]}.log").write_text(
                    logs.stdout + logs.stderr
                )
        self.compose("down", "-v", timeout=300)

    def containers_any(self, service: str) -> list[str]:
        """Ids of ``service``'s containers, running or not."""
        try:
            out = run([
                self.engine.name, "ps", "-aq",
                "--filter", f"label=com.docker.compose.project={PROJECT}",
                "--filter", f"label=com.docker.compose.service={service}",
            ])  # fmt: skip
        except StackError:
            return []
        return out.split()


def http_status(url: str, *, headers: Mapping[str, str] | None = None) -> int | None:
    """The status ``url`` answers a GET with, or None if nothing answered."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def get_json(url: str, *, headers: Mapping[str, str] | None = None) -> Any:
    """GET ``url`` and parse its JSON body (errors propagate)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def post_json(url: str, body: Mapping[str, Any], *, headers: Mapping[str, str]) -> Any:
    """POST ``body`` as JSON to ``url``; the parsed answer (errors propagate)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={**headers, "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    """Poll ``condition()`` until it is true; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(1)
