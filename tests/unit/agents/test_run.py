"""Runtime.load: which strategy picks a model group's deployment (the setting, else the catalog's
``router_settings.routing_strategy``, else by weight)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.run import Runtime
from workers.settings import Settings

CATALOG = """
model_list:
  - model_name: mini
    litellm_params: {model: gpt-4.1-mini}
    model_info: {tier: fast, quality: 0.5, expected_latency_s: 1.0}
"""


@pytest.mark.parametrize(
    ("setting", "written", "used"),
    [
        (None, None, "simple-shuffle"),
        (None, "least-busy", "least-busy"),
        ("simple-shuffle", "least-busy", "simple-shuffle"),
        ("least-busy", None, "least-busy"),
    ],
)
def test_the_setting_wins_then_the_catalogs_routing_strategy(
    tmp_path: Path, setting: str | None, written: str | None, used: str
) -> None:
    catalog = tmp_path / "catalog.yaml"
    router = f"router_settings: {{routing_strategy: {written}}}\n" if written else ""
    catalog.write_text(CATALOG + router)
    settings = Settings.model_validate(
        {"broker_url": "redis://unused", "catalog_path": catalog, "deployment_strategy": setting}
    )

    runtime = Runtime.load(settings)

    assert runtime.settings.deployment_strategy == used
    assert runtime.fleet.settings.deployment_strategy == used
