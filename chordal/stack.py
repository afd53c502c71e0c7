"""The local stack: broker, provider simulator, router and tier workers as child processes.

`chordal dev`, `chordal demo` and the integration tests all start Chordal this way, so what the
tests exercise is what a developer runs. With the local tier on, the stack also runs its worker
and, unless ``local_model_url`` names a server, llama.cpp's server with SmolLM2.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chordal.broker import EmbeddedBroker, free_port
from chordal.lifecycle import Service, stop_group, tail
from chordal.local_model import LocalModelServer
from workers.errors import ConfigurationError
from workers.settings import Settings
from workers.tiers import QUALITY_TIERS, ROUTER_QUEUE, Tier

READY_TIMEOUT_S = 120.0
STOP_MARGIN_S = 15.0
Progress = Callable[[str], None]


@dataclass
class ChildProcess:
    """A started component and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        """The last lines of its log, for error messages."""
        return tail(self.log, lines)


@dataclass
class LocalStack(Service):
    """Start with :meth:`start` (or ``with``); :attr:`settings` then points at the stack.

    ``tiers`` are the tiers that get a worker; the local tier's is added whenever the tier is on.
    """

    settings: Settings
    tiers: Sequence[Tier] = QUALITY_TIERS
    worker_args: Sequence[str] = ()
    progress: Progress = lambda _message: None
    broker: EmbeddedBroker | None = None
    local_model: LocalModelServer | None = None
    children: list[ChildProcess] = field(default_factory=list)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def start(self) -> LocalStack:
        """Start every component and wait until each worker consumes its queue."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        updates: dict[str, Any] = {}
        if not self.settings.broker_url:
            self.progress("starting embedded Valkey broker")
            self.broker = EmbeddedBroker(self.settings.data_dir).start()
            updates["broker_url"] = self.broker.url
        if self.settings.local_tier:
            if not self.settings.local_model_url:
                self.progress("starting the local model (llama.cpp server, SmolLM2-135M)")
                logs = self.settings.data_dir / "logs"
                self.local_model = LocalModelServer(log_dir=logs).start()
                updates["local_model_url"] = self.local_model.url
            if Tier.LOCAL not in self.tiers:
                self.tiers = (*self.tiers, Tier.LOCAL)
        if self.settings.resolved_profile == "offline":
            port = free_port()
            updates["simulator_url"] = f"http://127.0.0.1:{port}/v1"
            updates["profile"] = "offline"
        self.settings = self.settings.model_copy(update=updates)
        if "simulator_url" in updates:
            self.progress(f"starting provider simulator on {self.settings.simulator_url}")
            self._spawn("simulator", self._simulator_command(port))
        self.progress("starting router worker")
        self._spawn_worker(
            "router", [*self._chordal, "worker", "--router", "--processes", "1", *self.worker_args]
        )
        for tier in self.tiers:
            self.add_worker(tier)
        self.wait_until_consuming()

    def add_worker(self, tier: Tier) -> ChildProcess:
        """Start one more worker for ``tier``; it loads in the background."""
        self.progress(f"starting {tier} tier worker")
        command = [*self._chordal, "worker", "--tier", tier, "--processes", "1", *self.worker_args]
        return self._spawn_worker(f"{tier.value}-{len(self.children)}", command)

    def _spawn_worker(self, name: str, command: list[str]) -> ChildProcess:
        # Each worker process serves its own /metrics, so each gets a port of its own.
        port = free_port()
        self.metrics_ports[name] = port
        return self._spawn(name, command, extra_env={"CHORDAL_METRICS_PORT": str(port)})

    @property
    def _chordal(self) -> list[str]:
        return [sys.executable, "-m", "chordal.cli"]

    def _simulator_command(self, port: int) -> list[str]:
        config_path = self.settings.data_dir / "simulator.json"
        config_path.write_text(json.dumps(simulator_profiles(self.settings)))
        return [
            sys.executable, "-m", "chordal.simulator",
            "--port", str(port),
            "--seed", str(self.settings.sim_seed),
            "--latency-scale", str(self.settings.sim_latency_scale),
            "--config", str(config_path),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        """The environment a child process gets: this one plus the stack's settings."""
        env = dict(os.environ)
        for name, value in self.settings.model_dump(mode="json", exclude_none=True).items():
            # pydantic-settings reads complex values (dicts, lists) from the environment as JSON.
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            env[f"CHORDAL_{name.upper()}"] = text
        return env

    def _spawn(
        self, name: str, command: list[str], *, extra_env: dict[str, str] | None = None
    ) -> ChildProcess:
        logs = self.settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT,
                env={**self.env(), **(extra_env or {})},
                start_new_session=True,
            )  # fmt: skip
        child = ChildProcess(name, process, log)
        self.children.append(child)
        return child

    def wait_until_consuming(self) -> None:
        """Block until the router's queue and every tier's have a consumer."""
        from workers.app import create_app

        wanted = {ROUTER_QUEUE, *(tier.queue for tier in self.tiers)}
        self.progress("waiting for workers to load LiteLLM and the catalog")
        app = create_app(self.settings)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                self.check_alive()
                replies = app.control.inspect(timeout=1.0).active_queues() or {}
                consumed = {q["name"] for queues in replies.values() for q in queues}
                if wanted <= consumed:
                    return
        finally:
            app.close()
        raise ConfigurationError(f"workers not ready after {READY_TIMEOUT_S} s")

    def check_alive(self) -> None:
        """Raise ConfigurationError with its log tail if a component has exited."""
        for child in self.children:
            if child.process.poll() is not None:
                msg = f"{child.name} exited with {child.process.returncode}:\n{child.tail()}"
                raise ConfigurationError(msg)
        if self.local_model is not None and not self.local_model.alive():
            raise ConfigurationError(f"the local model server exited:\n{self.local_model.tail()}")

    def stop(self) -> None:
        """Stop workers (warm shutdown), the simulator, the local model and the broker."""
        # Signal every child first, so their warm shutdowns run side by side.
        for child in self.children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGTERM)
        # Workers finish their calls within the shutdown grace, give back the rest and exit 0
        # (agents.liveness); only one stuck past that is killed.
        for child in self.children:
            stop_group(child.process, timeout_s=self.settings.shutdown_grace_s + STOP_MARGIN_S)
        self.children.clear()
        if self.local_model is not None:
            self.local_model.stop()
            self.local_model = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


def simulator_profiles(settings: Settings) -> dict[str, Any]:
    """Simulator config: each catalog model answers at its catalog latency."""
    from routing.catalog import read_catalog, written_latency_s

    catalog = read_catalog(settings.catalog_path)
    latency = settings.tier_expected_latency_s
    return {
        "seed": settings.sim_seed,
        "latency_scale": settings.sim_latency_scale,
        "models": {
            entry.model_name: {"latency_median_s": written_latency_s(entry.model_info, latency)}
            for entry in catalog.model_list
        },
    }
