"""Fixtures of the unit tests that need Chordal's Celery app: one on the session's Valkey, and
a worker identity."""

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
    # Celery subscribes to the results of what it sends (a chord's members among them); nothing
    # here waits for them, and the subscription must not outlive the session's broker.
    consumer = application.backend.result_consumer
    for key in list(consumer.subscribed_to):
        consumer.cancel_for(key.decode().removeprefix("celery-task-meta-"))
    consumer.stop()
    application.close()


@pytest.fixture
def as_worker(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make this process take messages as worker ``name`` (what a heartbeat's start does)."""

    def become(name: str) -> None:
        monkeypatch.setattr(recovery, "_worker_id", name)

    return become
