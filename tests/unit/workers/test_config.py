"""Celery configuration derived from Settings (``workers.config``, exposed by ``celeryconfig``)."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
from celery import Celery

from workers.config import celery_config
from workers.errors import ConfigurationError
from workers.redis_pools import BACKEND_CLASS, TRANSPORT_CLASS
from workers.settings import Settings, get_settings
from workers.tiers import ALL_QUEUES

REDIS = "redis://localhost:6379/0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CHORDAL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_config():
    """celery_config for Settings built from keyword overrides (broker defaults to Redis)."""

    def make(**overrides):
        overrides.setdefault("broker_url", REDIS)
        return celery_config(Settings(**overrides))

    return make


@pytest.fixture
def make_app(make_config):
    """A Celery app configured from settings; closed after the test."""
    apps: list[Celery] = []

    def make(**overrides) -> Celery:
        app = Celery("chordal-test", set_as_current=False)
        app.config_from_object(make_config(**overrides))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def test_only_json_is_produced_and_accepted(make_config) -> None:
    config = make_config()

    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    assert config["task_serializer"] == "json"
    assert config["result_serializer"] == "json"
    assert config["event_serializer"] == "json"


def test_a_crash_never_loses_a_job(make_config) -> None:
    config = make_config()

    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1


def test_countdown_messages_a_worker_holds_are_bounded(make_config) -> None:
    assert make_config()["worker_eta_task_limit"] == 1_000
    assert make_config(eta_task_limit=7)["worker_eta_task_limit"] == 7


def test_visibility_timeout_is_set_for_broker_and_results(make_config) -> None:
    # Given
    config = make_config(task_time_limit_s=120.0, visibility_timeout_s=900.0)

    # Then
    assert config["broker_transport_options"]["visibility_timeout"] == 900.0
    assert config["result_backend_transport_options"]["visibility_timeout"] == 900.0
    assert config["task_time_limit"] == 120.0
    assert config["broker_transport_options"]["visibility_timeout"] > config["task_time_limit"]


def test_defaults_keep_visibility_above_the_time_limit(make_config) -> None:
    config = make_config()

    assert config["broker_transport_options"]["visibility_timeout"] > config["task_time_limit"]
    assert (
        config["result_backend_transport_options"]["visibility_timeout"] > config["task_time_limit"]
    )


def test_results_expire(make_config) -> None:
    assert make_config()["result_expires"] > 0
    assert make_config(result_expires_s=3600)["result_expires"] == 3600


def test_broker_and_backend_come_from_settings(make_config) -> None:
    config = make_config(broker_url="redis://b:6379/1", result_backend="redis://r:6379/2")

    assert config["broker_url"] == "redis://b:6379/1"
    assert config["result_backend"] == f"{BACKEND_CLASS}+redis://r:6379/2"
    assert config["broker_transport"] == TRANSPORT_CLASS


def test_redis_broker_doubles_as_result_backend(make_config) -> None:
    assert make_config()["result_backend"] == f"{BACKEND_CLASS}+{REDIS}"


def test_every_queue_has_its_own_exchange_and_routing_key(make_config) -> None:
    queues = {queue.name: queue for queue in make_config()["task_queues"]}

    assert sorted(queues) == sorted(ALL_QUEUES)
    for name, queue in queues.items():
        assert queue.exchange.name == name
        assert queue.exchange.type == "direct"
        assert queue.routing_key == name


def test_queue_bindings_survive_celery(make_app) -> None:
    # Regression: left to Celery's defaults, every queue was bound to the default exchange and
    # routing key, so one message reached every queue.
    app = make_app()

    queues = app.amqp.queues
    assert {
        name: (queues[name].exchange.name, queues[name].routing_key) for name in ALL_QUEUES
    } == {name: (name, name) for name in ALL_QUEUES}


def test_unrouted_tasks_go_to_the_router_queue(make_app) -> None:
    app = make_app()

    assert app.conf.task_default_queue == "router"
    assert app.amqp.router.route({}, "some.other.task")["queue"].name == "router"
    assert app.amqp.router.route({}, "chordal.route")["queue"].name == "router"


def test_no_broker_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CHORDAL_BROKER_URL"):
        celery_config(Settings(broker_url=None))


def test_amqp_broker_needs_a_result_backend() -> None:
    with pytest.raises(ConfigurationError, match="CHORDAL_RESULT_BACKEND"):
        celery_config(Settings(broker_url="amqp://guest@localhost:5672//"))


def test_amqp_broker_with_a_result_backend_is_accepted(make_config) -> None:
    config = make_config(broker_url="amqp://guest@localhost//", result_backend="redis://r/0")

    assert config["broker_url"] == "amqp://guest@localhost//"
    assert config["result_backend"] == f"{BACKEND_CLASS}+redis://r/0"
    assert "broker_transport" not in config  # kombu's own AMQP transport


@pytest.fixture
def import_celeryconfig():
    """Import the ``celeryconfig`` module afresh, under the environment the test set."""

    def load():
        sys.modules.pop("celeryconfig", None)
        get_settings.cache_clear()
        return importlib.import_module("celeryconfig")

    yield load
    sys.modules.pop("celeryconfig", None)
    get_settings.cache_clear()


def test_celeryconfig_module_exposes_the_settings(
    import_celeryconfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHORDAL_BROKER_URL", "redis://from-env:6379/4")

    module = import_celeryconfig()

    assert module.broker_url == "redis://from-env:6379/4"
    assert module.result_backend == f"{BACKEND_CLASS}+redis://from-env:6379/4"
    assert module.accept_content == ["json"]
    assert [queue.name for queue in module.task_queues] == list(ALL_QUEUES)


def test_celeryconfig_module_refuses_to_guess_a_broker(import_celeryconfig) -> None:
    # Celery's own default would be a RabbitMQ on localhost.
    with pytest.raises(ConfigurationError, match="CHORDAL_BROKER_URL"):
        import_celeryconfig()


def test_abandoned_messages_are_looked_for_at_every_sweep(make_config) -> None:
    options = make_config(restore_interval_s=3)["broker_transport_options"]

    assert options["unacked_restore_interval"] == 3
    assert options["unacked_restore_throttle"] == 1


def test_rabbitmq_publishes_are_confirmed(make_config) -> None:
    # A publish that returned must be on the broker: a submit made as RabbitMQ goes down fails
    # (BrokerUnavailable) instead of vanishing.
    amqp = make_config(broker_url="amqp://guest:guest@localhost//", result_backend=REDIS)
    assert amqp["broker_transport_options"]["confirm_publish"] is True
    assert "confirm_publish" not in make_config()["broker_transport_options"]


def test_quorum_queues_count_deliveries_on_rabbitmq_only(make_config) -> None:
    amqp = make_config(broker_url="amqp://localhost//", result_backend=REDIS, rabbitmq_quorum=True)
    arguments = {queue.name: queue.queue_arguments for queue in amqp["task_queues"]}
    assert set(arguments) == set(ALL_QUEUES)
    assert all(a == {"x-queue-type": "quorum", "x-delivery-limit": 6} for a in arguments.values())
    # Quorum queues take no x-max-priority; on Redis the flag changes nothing.
    assert amqp["task_queue_max_priority"] is None
    redis_queues = make_config(rabbitmq_quorum=True)["task_queues"]
    assert all(queue.queue_arguments is None for queue in redis_queues)
