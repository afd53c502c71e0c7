from __future__ import annotations

import json
from pathlib import Path

import pytest

from chordal.gateway.keys import KeyRing, digest, new_key, read_keys_file
from workers.errors import ConfigurationError
from workers.settings import Settings


def test_a_key_maps_to_its_tenant_through_its_digest_only() -> None:
    key = new_key()
    ring = KeyRing({digest(key): "acme"})

    assert ring.tenant(key) == "acme"
    assert ring.tenant(digest(key)) is None
    assert ring.tenant(key + "x") is None
    assert key.startswith("chd_")
    assert len(key) > 40
    assert new_key() != key


def test_a_malformed_digest_or_tenant_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="not a sha256"):
        KeyRing({"plain-key": "acme"})
    with pytest.raises(ConfigurationError, match="tenant 'a b'"):
        KeyRing({digest("k"): "a b"})


def test_keys_come_from_settings_and_a_mounted_file(tmp_path: Path) -> None:
    one, two = new_key(), new_key()
    yaml_file = tmp_path / "keys.yaml"
    yaml_file.write_text(f'"{digest(two)}": beta\n')
    settings = Settings(gateway_keys={digest(one): "acme"}, gateway_keys_file=yaml_file)

    ring = KeyRing.from_settings(settings)

    assert (ring.tenant(one), ring.tenant(two)) == ("acme", "beta")
    assert ring.tenants == {"acme", "beta"}


def test_a_bad_keys_file_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="No such file"):
        read_keys_file(tmp_path / "missing.json")
    listed = tmp_path / "keys.json"
    listed.write_text(json.dumps(["a", "b"]))
    with pytest.raises(ConfigurationError, match="want"):
        read_keys_file(listed)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigurationError, match="not valid"):
        read_keys_file(broken)
