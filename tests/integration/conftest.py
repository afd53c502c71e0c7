"""A real local stack for the integration tests: private Valkey, simulator, worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agents.client import Client
from chordal.simulator import SimConfig
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.integration.simulator_support import SimServer
from tests.support import stack_settings


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One stack for the session: router plus one worker per tier."""
    with LocalStack(stack_settings(tmp_path_factory.mktemp("stack"))) as running:
        yield running


@pytest.fixture
def client(stack: LocalStack) -> Iterator[Client]:
    """A producer client bound to the session stack."""
    producer = Client(settings=stack.settings)
    yield producer
    producer.app.close()


@pytest.fixture
def simulator(stack: LocalStack) -> Iterator[SimulatorAdmin]:
    """The stack's simulator; every fault a test sets is undone afterwards."""
    sim = SimulatorAdmin(stack.settings.simulator_url)
    sim.reset()
    yield sim
    sim.reset()


@pytest.fixture
def submit_and_wait(client: Client) -> Callable[..., dict[str, Any]]:
    """Submit a job and wait for its result."""

    def run(timeout: float = 60.0, **job: Any) -> dict[str, Any]:
        return client.wait(client.submit(job), timeout=timeout)

    return run


@pytest.fixture
def start_simulator() -> Iterator[Callable[[SimConfig], SimServer]]:
    """Factory: start an in-process simulator for a config; every one started is stopped after."""
    servers: list[SimServer] = []

    def start(config: SimConfig) -> SimServer:
        server = SimServer(config).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
