"""What an entry leaves out: its tier from its price, its quality from Chordal's table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from routing.catalog import read_catalog
from routing.catalog_infer import (
    blended_usd_per_million,
    infer_tier,
    normalised,
    price_key,
    skip_reason,
    table_quality,
)
from routing.llm import model_cost_map
from workers.settings import DEFAULT_TIER_PRICE_BANDS_USD
from workers.tiers import Tier

QUALITY_YAML = Path(__file__).resolve().parents[3] / "routing" / "catalogs" / "quality.yaml"


def test_the_blend_is_the_mean_of_input_and_output_per_million() -> None:
    assert blended_usd_per_million(1.25e-6, 10e-6) == 5.625
    # On a band's edge exactly, not a float's width above it.
    assert blended_usd_per_million(4e-7, 1.6e-6) == 1.0


@pytest.mark.parametrize(
    ("blended", "tier"),
    [(0.0, Tier.FAST), (1.0, Tier.FAST), (1.01, Tier.BALANCED), (5.0, Tier.BALANCED),
     (5.01, Tier.PREMIUM), (1_000.0, Tier.PREMIUM)],
)  # fmt: skip
def test_the_tier_is_the_first_band_holding_the_price(blended: float, tier: Tier) -> None:
    assert infer_tier(blended, DEFAULT_TIER_PRICE_BANDS_USD) is tier


def test_with_one_band_dearer_models_are_premium() -> None:
    assert infer_tier(0.5, {Tier.FAST: 0.2}) is Tier.PREMIUM


def test_default_bands_agree_with_most_of_the_shipped_catalog() -> None:
    # The shipped tiers follow benchmark quality; price is a proxy that should mostly agree.
    cost = model_cost_map()
    agree = []
    for item in read_catalog().model_list:
        known = cost[item.litellm_params["model"]]
        blended = blended_usd_per_million(
            known["input_cost_per_token"], known["output_cost_per_token"]
        )
        agree.append(infer_tier(blended, DEFAULT_TIER_PRICE_BANDS_USD) is item.model_info.tier)
    assert sum(agree) >= 8, agree


@pytest.mark.parametrize(
    ("name", "key"),
    [("gpt-4o", "gpt-4o"), ("openai/gpt-4o", "gpt-4o"), ("azure/gpt-4o", "azure/gpt-4o"),
     ("gemini/gemini-2.5-pro", "gemini/gemini-2.5-pro"),
     ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"), ("openai/my-finetune", None)],
)  # fmt: skip
def test_price_key_drops_provider_prefixes_as_litellm_does(name: str, key: str | None) -> None:
    assert price_key(model_cost_map(), name) == key


@pytest.mark.parametrize(
    ("name", "expected"),
    [("gpt-5-2025-08-07", "gpt-5"), ("azure/GPT-5-mini", "gpt-5-mini"),
     ("vertex_ai/claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
     ("anthropic/claude-haiku-4-5-20251001", "claude-haiku-4-5"),
     ("openrouter/openai/gpt-4.1", "gpt-4.1")],
)  # fmt: skip
def test_names_lose_provider_prefixes_and_snapshot_dates(name: str, expected: str) -> None:
    assert normalised(name) == expected


def test_table_quality_takes_the_first_name_the_table_lists() -> None:
    assert table_quality(["azure/prod-deployment", "azure/gpt-5", "gpt-5-mini"]) == {
        "general": 1.00, "coding": 0.92, "extraction": 0.98
    }  # fmt: skip
    assert table_quality(["mistral/mistral-small-2506"]) == table_quality(["mistral-small-latest"])
    assert table_quality(["gpt-4o", None]) is None


def test_the_table_holds_the_shipped_catalog_s_scores() -> None:
    rows = yaml.safe_load(QUALITY_YAML.read_text())["models"]
    assert len(rows) == 12
    for item in read_catalog().model_list:
        assert rows[item.model_name]["quality"] == item.model_info.quality, item.model_name


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"model_name": "*", "model": "*"}, "a wildcard entry"),
     ({"model": "openai/*"}, "a wildcard entry"),
     ({"mode": "embedding"}, "mode embedding: Chordal routes chat completions only"),
     ({"mode": "rerank"}, "mode rerank"),
     ({"priced": False}, "LiteLLM has no price for 'gpt-4o'"),
     ({"mode": "chat"}, None), ({"mode": "responses"}, None), ({}, None)],
)  # fmt: skip
def test_skip_reasons(fields: dict, reason: str | None) -> None:
    values = {"model_name": "m", "model": "gpt-4o", "mode": None, "priced": True,
              "price_model": "gpt-4o"}  # fmt: skip
    values.update(fields)

    found = skip_reason(**values)

    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(reason)
