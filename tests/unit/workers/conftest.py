"""Fixtures of the Celery runtime's tests: an app on the session's Valkey, a worker identity."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery

from chordal.broker import EmbeddedBroker
from workers import recovery
from workers.app import create_app
from workers.settings import Settings


@pytest.fixture
def app(valkey: EmbeddedBroker, connect: Callable[[], redis.Redis]) -> Iterator[Celery]:
    """A Chordal Celery app on the session's Valkey, its database emptied first."""
    connect()
    application = create_app(Settings(broker_url=valkey.url, result_backend=valkey.url))
    yield application
    application.close()


@pytest.fixture
def as_worker(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make this process take messages as worker ``name`` (what a heartbeat's start does)."""

    def become(name: str) -> None:
        monkeypatch.setattr(recovery, "_worker_id", name)

    return become
