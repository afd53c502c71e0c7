"""TLS options for ``rediss://`` (``workers.tls``): one dict for Celery and every Redis client."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import redis
from limits.storage import storage_from_string

from workers.app import create_app
from workers.config import celery_config
from workers.errors import ConfigurationError
from workers.settings import Settings
from workers.tls import celery_ssl, redis_ssl, uses_tls

TLS_URL = "rediss://:pw@cache:6380/0"
PLAIN_URL = "redis://:pw@cache:6379/0"
FILES = {
    "redis_tls_ca_file": Path("/certs/ca.crt"),
    "redis_tls_cert_file": Path("/certs/client.crt"),
    "redis_tls_key_file": Path("/certs/client.key"),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CHORDAL_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("url", "tls"),
    [(TLS_URL, True), ("REDISS://h:6380/0", True), (PLAIN_URL, False),
     ("amqps://guest:guest@mq:5671//", False), (None, False)],
)  # fmt: skip
def test_only_a_rediss_url_uses_tls(url: str | None, tls: bool) -> None:
    assert uses_tls(url) is tls


def test_a_plain_url_gets_no_options_whatever_the_settings() -> None:
    # redis-py's plain connections take no ssl_* arguments: passing them would fail.
    assert redis_ssl(PLAIN_URL, Settings(**FILES)) == {}


def test_without_files_the_server_is_checked_against_the_system_store() -> None:
    assert redis_ssl(TLS_URL, Settings()) == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_the_files_become_redis_py_arguments() -> None:
    assert redis_ssl(TLS_URL, Settings(**FILES)) == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": "/certs/ca.crt",
        "ssl_certfile": "/certs/client.crt",
        "ssl_keyfile": "/certs/client.key",
    }


@pytest.mark.parametrize(
    ("verify", "mode"),
    [("required", ssl.CERT_REQUIRED), ("optional", ssl.CERT_OPTIONAL), ("none", ssl.CERT_NONE)],
)
def test_the_verify_setting_is_the_certificate_requirement(verify: str, mode: int) -> None:
    assert redis_ssl(TLS_URL, Settings(redis_tls_verify=verify))["ssl_cert_reqs"] == mode


def test_a_key_without_its_certificate_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="CHORDAL_REDIS_TLS_KEY_FILE"):
        redis_ssl(TLS_URL, Settings(redis_tls_key_file=Path("/certs/client.key")))


def test_the_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORDAL_REDIS_TLS_CA_FILE", "/env/ca.crt")
    monkeypatch.setenv("CHORDAL_REDIS_TLS_VERIFY", "optional")
    assert redis_ssl(TLS_URL, Settings()) == {
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "ssl_ca_certs": "/env/ca.crt",
    }


def test_celery_gets_options_only_for_the_servers_that_use_tls() -> None:
    both = Settings(broker_url=TLS_URL, **FILES)
    assert celery_ssl(both) == {
        "broker_use_ssl": redis_ssl(TLS_URL, both),
        "redis_backend_use_ssl": redis_ssl(TLS_URL, both),
    }
    results_only = Settings(broker_url="amqps://guest:guest@mq:5671//", result_backend=TLS_URL)
    assert set(celery_ssl(results_only)) == {"redis_backend_use_ssl"}
    assert celery_ssl(Settings(broker_url=PLAIN_URL, **FILES)) == {}
    assert "broker_use_ssl" in celery_config(Settings(broker_url=TLS_URL))


def test_celerys_broker_and_backend_connect_with_the_options() -> None:
    # Without redis_backend_use_ssl, Celery refuses a rediss:// backend URL that names no
    # ssl_cert_reqs; without broker_use_ssl, kombu would not check the certificate at all.
    settings = Settings(broker_url=TLS_URL, **FILES)
    app = create_app(settings)
    try:
        params = app.backend.connparams
        assert issubclass(params["connection_class"], redis.SSLConnection)
        assert params["ssl_ca_certs"] == "/certs/ca.crt"
        assert params["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        with app.connection_for_write() as connection:
            assert connection.ssl == redis_ssl(TLS_URL, settings)
    finally:
        app.close()


def test_the_gateways_rate_limit_storage_takes_the_same_options() -> None:
    options = redis_ssl(TLS_URL, Settings(**FILES))
    storage = storage_from_string(TLS_URL, **options)
    kwargs = storage.storage.connection_pool.connection_kwargs
    assert kwargs["ssl_keyfile"] == "/certs/client.key"
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
