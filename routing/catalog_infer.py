"""What a catalog entry leaves out, worked out from LiteLLM's own knowledge of the model.

A LiteLLM proxy config names models and deployments but none of Chordal's fields. For such an
entry Chordal finds the model in LiteLLM's cost map (by name, with or without its provider
prefix), which gives its price, context window and ``mode``; its tier then follows from the
price (:func:`infer_tier`), its quality from the table Chordal ships
(``routing/catalogs/quality.yaml``), and its expected latency from its tier. An entry LiteLLM
cannot serve as a chat completion, or cannot price, gets a reason to be skipped
(:func:`skip_reason`).

Nothing here imports LiteLLM: the cost map is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from workers.settings import (
    DEFAULT_TIER_EXPECTED_LATENCY_S,
    DEFAULT_TIER_PRICE_BANDS_USD,
    Settings,
)
from workers.tiers import QUALITY_TIERS, TaskKind, Tier

# LiteLLM's modes Chordal can call with acompletion: chat, and the models LiteLLM reaches
# through its Responses API bridge (``mode: responses``), which answer the same call.
ROUTABLE_MODES = frozenset({"chat", "responses"})
# A model's blended price weighs input and output alike: an agent's prompt and its answer are
# of the same order of tokens (Artificial Analysis's 3:1 blend suits long-prompt chat instead).
BLEND_INPUT_SHARE = 0.5
# A dated snapshot names the same model as its undated name: -2025-08-07, -20250929, @20250929.
SNAPSHOT = re.compile(r"(-\d{4}-\d{2}-\d{2}|[-@]\d{8})$")


@dataclass(frozen=True)
class TierDefaults:
    """The settings that fill in an entry's tier and expected latency."""

    price_bands_usd: Mapping[Tier, float] = field(
        default_factory=lambda: dict(DEFAULT_TIER_PRICE_BANDS_USD)
    )
    expected_latency_s: Mapping[Tier, float] = field(
        default_factory=lambda: dict(DEFAULT_TIER_EXPECTED_LATENCY_S)
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> TierDefaults:
        """The bands and latencies ``settings`` set."""
        return cls(
            price_bands_usd=settings.tier_price_bands_usd,
            expected_latency_s=settings.tier_expected_latency_s,
        )


def blended_usd_per_million(input_cost_per_token: float, output_cost_per_token: float) -> float:
    """The price a tier is inferred from: USD per 1M tokens, input and output blended."""
    blended = BLEND_INPUT_SHARE * input_cost_per_token
    blended += (1 - BLEND_INPUT_SHARE) * output_cost_per_token
    # Rounded, so that a price exactly on a band's edge (0.4 + 1.6 over 2) lands inside it.
    return round(blended * 1_000_000, 6)


def infer_tier(blended_usd: float, bands: Mapping[Tier, float]) -> Tier:
    """The first tier whose band holds ``blended_usd``; premium above every band. Never local:
    that tier is where a model runs, which no price tells."""
    for tier in QUALITY_TIERS:
        if tier in bands and blended_usd <= bands[tier]:
            return tier
    return Tier.PREMIUM


def price_key(model_cost: Mapping[str, Mapping[str, Any]], name: str) -> str | None:
    """The key of LiteLLM's cost map that prices ``name``: the name itself, else the name less
    its provider prefix(es), as LiteLLM looks it up (``openai/gpt-4o`` is ``gpt-4o``)."""
    candidate = name
    while True:
        if candidate in model_cost:
            return candidate
        if "/" not in candidate:
            return None
        candidate = candidate.split("/", 1)[1]


def skip_reason(
    *, model_name: str, model: str, mode: str | None, priced: bool, price_model: str
) -> str | None:
    """Why Chordal cannot route to an entry, or None when it can."""
    if "*" in model_name or "*" in model:
        return "a wildcard entry: Chordal routes to named models only; list each model"
    if mode is not None and mode not in ROUTABLE_MODES:
        return f"mode {mode}: Chordal routes chat completions only"
    if not priced:
        return (
            f"LiteLLM has no price for {price_model!r}; set model_info.base_model to a model "
            "LiteLLM knows, or input_cost_per_token and output_cost_per_token"
        )
    return None


def table_quality(names: Iterable[str | None]) -> dict[TaskKind, float] | None:
    """The shipped table's scores for the first of ``names`` it lists, or None."""
    table = _quality_table()
    for name in names:
        if name and (found := table.get(normalised(name))) is not None:
            return dict(found)
    return None


def normalised(name: str) -> str:
    """``name`` as the quality table lists it: no provider prefix, no dated snapshot."""
    return SNAPSHOT.sub("", name.rsplit("/", 1)[-1].lower())


@lru_cache(maxsize=1)
def _quality_table() -> Mapping[str, Mapping[TaskKind, float]]:
    path = resources.files("routing") / "catalogs" / "quality.yaml"
    raw = yaml.safe_load(path.read_text())
    table: dict[str, Mapping[TaskKind, float]] = {}
    for name, row in raw["models"].items():
        for known in (name, *row.get("aliases", ())):
            table[normalised(known)] = row["quality"]
    return table
