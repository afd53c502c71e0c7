"""The blocks around model_list: honoured, mapped onto Chordal, or ignored with a line."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing.catalog_config import (
    LiteLLMSettings,
    ProxySettings,
    RouterSettings,
    proxy_settings,
    with_includes,
)
from workers.errors import ConfigurationError


def test_no_blocks_mean_chordal_s_defaults() -> None:
    assert proxy_settings(None, None, {}) == ProxySettings()


def test_litellm_settings_honoured_and_ignored() -> None:
    litellm = LiteLLMSettings.model_validate(
        {"request_timeout": 30, "drop_params": True, "num_retries": 2, "cache": True,
         "telemetry": False}
    )  # fmt: skip

    found = proxy_settings(litellm, None, {})

    assert (found.request_timeout_s, found.drop_params) == (30, True)
    assert list(found.notes) == [
        "litellm_settings.num_retries: ignored: Chordal is the retry layer (LiteLLM makes one "
        "attempt per call)",
        "litellm_settings.cache: ignored: Chordal does not cache answers",
        "litellm_settings.telemetry: ignored: Chordal does not apply it",
    ]


@pytest.mark.parametrize(
    ("strategy", "pick", "noted"),
    [("simple-shuffle", "simple-shuffle", False), ("least-busy", "least-busy", False),
     ("latency-based-routing", None, True), ("usage-based-routing-v2", None, True)],
)  # fmt: skip
def test_routing_strategy_maps_onto_the_nearest_pick(strategy, pick, noted) -> None:
    found = proxy_settings(None, RouterSettings(routing_strategy=strategy), {})

    assert found.deployment_pick == pick
    assert bool(found.notes) is noted
    if noted:
        assert found.notes[0].startswith(f"router_settings.routing_strategy {strategy}: not")


def test_router_settings_timeout_is_the_call_timeout_unless_request_timeout_is_set() -> None:
    router = RouterSettings(timeout=20)

    assert proxy_settings(None, router, {}).request_timeout_s == 20
    both = proxy_settings(LiteLLMSettings(request_timeout=10), router, {})
    assert both.request_timeout_s == 10


def test_redis_settings_are_one_note_and_others_one_each() -> None:
    router = RouterSettings.model_validate(
        {"redis_host": "h", "redis_port": 6379, "cooldown_time": 30, "num_retries": 2}
    )

    found = proxy_settings(None, router, {"general_settings": {}, "environment_variables": {}})

    assert list(found.notes) == [
        "router_settings.cooldown_time: ignored: Chordal's circuit breakers take its place "
        "(CHORDAL_BREAKER_*)",
        "router_settings.num_retries: ignored: Chordal is the retry layer (LiteLLM makes one "
        "attempt per call)",
        "router_settings.redis_host, redis_port: ignored: Chordal's own broker "
        "(CHORDAL_BROKER_URL) holds the fleet's state",
        "general_settings: ignored: the LiteLLM proxy server's own settings",
        "environment_variables: ignored: set them in the workers' environment (os.environ/NAME "
        "is read from it)",
    ]


def test_aliases_name_routable_groups_only() -> None:
    router = RouterSettings.model_validate(
        {"model_group_alias": {"gpt-4": "gpt-4o", "old": {"model": "gone", "hidden": True},
                               "gpt-4o": "claude"}}
    )  # fmt: skip
    settings = proxy_settings(None, router, {})

    kept, notes = settings.aliases_of({"gpt-4o", "claude"})

    assert kept == {"gpt-4": "gpt-4o"}
    assert notes == [
        "router_settings.model_group_alias.old: ignored: no routable model group 'gone'",
        "router_settings.model_group_alias.gpt-4o: ignored: a model group has that name",
    ]


def test_includes_append_their_model_list(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model_list:\n  - {model_name: a}\n")
    raw = {"include": "a.yaml", "model_list": [{"model_name": "main"}]}

    merged = with_includes(raw, path=tmp_path / "config.yaml")

    assert merged == {"model_list": [{"model_name": "main"}, {"model_name": "a"}]}
    assert "include" in raw  # the parsed file is left as it was


def test_an_included_file_without_model_list_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("litellm_settings: {}\n")

    with pytest.raises(ConfigurationError, match="has no model_list"):
        with_includes({"include": ["a.yaml"]}, path=tmp_path / "config.yaml")
