"""Fixtures shared by every test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

# Before anything imports LiteLLM: never fetch the price map from the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import pytest
import redis

from chordal.broker import EmbeddedBroker

# tests/e2e builds the image and runs the composed stack in containers: `make e2e` runs it
# (CHORDAL_E2E=1), `make test` does not.
collect_ignore = [] if os.environ.get("CHORDAL_E2E") == "1" else ["e2e"]


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One private Valkey server for every test that needs a real Redis."""
    with EmbeddedBroker(tmp_path_factory.mktemp("valkey")) as broker:
        yield broker


@pytest.fixture
def connect(valkey: EmbeddedBroker) -> Iterator[Callable[[], redis.Redis]]:
    """A factory of clients to the server, emptied first; closes them all afterwards."""
    clients: list[redis.Redis] = []

    def create() -> redis.Redis:
        client = redis.Redis.from_url(valkey.url)
        clients.append(client)
        return client

    create().flushdb()
    yield create
    for client in clients:
        client.close()
