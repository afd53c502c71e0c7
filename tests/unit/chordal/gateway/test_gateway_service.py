from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from chordal.gateway.keys import digest, new_key
from chordal.gateway.service import GatewayService
from workers.errors import ConfigurationError


def test_the_child_gets_digests_never_keys() -> None:
    key, theirs = new_key(), digest(new_key())
    env = {"CHORDAL_GATEWAY_KEYS": json.dumps({theirs: "ops"})}
    service = GatewayService(env=env, port=1, keys={key: "acme"}, log_dir=Path("."))

    given = service.child_env()["CHORDAL_GATEWAY_KEYS"]

    assert json.loads(given) == {theirs: "ops", digest(key): "acme"}
    assert key not in given


def test_dev_makes_one_key_for_the_default_tenant() -> None:
    service = GatewayService.for_dev(env={}, port=1, log_dir=Path("."))
    assert list(service.keys.values()) == ["default"]


def test_a_port_in_use_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        service = GatewayService(env={}, port=port, keys={}, log_dir=tmp_path)
        with pytest.raises(ConfigurationError, match="CHORDAL_GATEWAY_PORT"):
            service.start()
