"""Behaviour profiles of simulated models, the simulator configuration and fault draws."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue

Outcome = Literal["ok", "outage", "rate_limited", "error", "timeout"]
# How a malformed structured answer is broken: JSON cut off midway, or prose instead of JSON.
Malformation = Literal["truncated", "prose"]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]

ALL_MODELS = "*"


class ModelProfile(BaseModel):
    """Latency and fault behaviour of one simulated model.

    Every field can be changed at run time (``PATCH /admin/faults``, ``SimulatorAdmin.fault``).

    - ``latency_median_s``, ``latency_sigma``: lognormal latency of a successful answer.
    - ``error_rate`` (500), ``rate_limit_rate`` (429 with ``Retry-After: retry_after_s``),
      ``timeout_rate`` (hangs ``hang_s``, then 504): shares of requests failing that way.
    - ``outage``: every request gets a 503.
    - ``output_tokens``: length of a text answer; ``context_window``: longest prompt, in tokens.
    - ``rpm``, ``tpm``: provider rate limits over a sliding window of ``rate_window_s`` (a
      provider "minute"; tests shorten it). ``None`` means unlimited.
    - ``malformed_rate``: share of answers to a JSON-schema ``response_format`` whose content is
      not valid against the schema (truncated JSON or prose), still with HTTP 200, as a weak
      model answers.
    - ``json_overrides``: top-level fields forced into every JSON-schema answer, e.g.
      ``{"verdict": "revise"}``; applied only to properties the schema declares, values as given
      (so they can break the schema on purpose). A patch replaces the whole mapping.
    """

    model_config = ConfigDict(extra="forbid")

    latency_median_s: float = Field(default=0.2, ge=0.0)
    latency_sigma: float = Field(default=0.25, ge=0.0)
    error_rate: Rate = 0.0
    rate_limit_rate: Rate = 0.0
    retry_after_s: int = Field(default=1, ge=0)
    timeout_rate: Rate = 0.0
    hang_s: float = Field(default=30.0, ge=0.0)
    outage: bool = False
    output_tokens: int = Field(default=48, ge=1)
    context_window: int | None = Field(default=None, ge=1)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    rate_window_s: float = Field(default=60.0, gt=0.0)
    malformed_rate: Rate = 0.0
    json_overrides: dict[str, JsonValue] = Field(default_factory=dict)


class SimConfig(BaseModel):
    """Whole-simulator configuration: seed, default profile and per-model overrides."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    default: ModelProfile = Field(default_factory=ModelProfile)
    models: dict[str, ModelProfile] = Field(default_factory=dict)
    latency_scale: float = Field(default=1.0, ge=0.0)

    def profile_for(self, model: str) -> ModelProfile:
        """Return the profile of ``model``, falling back to the default profile."""
        return self.models.get(model, self.default)

    def patched(self, model: str, changes: dict[str, Any]) -> SimConfig:
        """Return a validated copy with ``changes`` applied to ``model`` (``"*"`` = all)."""
        if model == ALL_MODELS:
            default = _apply(self.default, changes)
            models = {name: _apply(p, changes) for name, p in self.models.items()}
        else:
            default = self.default
            models = {**self.models, model: _apply(self.profile_for(model), changes)}
        return self.model_copy(update={"default": default, "models": models})

    @classmethod
    def from_file(cls, path: str | Path) -> SimConfig:
        """Load a configuration from a YAML or JSON file."""
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        return cls.model_validate(data or {})


def _apply(profile: ModelProfile, changes: dict[str, Any]) -> ModelProfile:
    # Re-validating the merged dict is what rejects unknown fields and bad values.
    return ModelProfile.model_validate({**profile.model_dump(), **changes})


@dataclass(frozen=True)
class Decision:
    """The fate of one request, drawn from its deterministic RNG.

    ``malformed`` says how a structured answer is broken; it only matters for an ``ok`` request
    that carries a JSON-schema ``response_format``.
    """

    outcome: Outcome
    latency_s: float
    malformed: Malformation | None = None


def decide(config: SimConfig, model: str, *, seq: int) -> Decision:
    """Decide request number ``seq`` of ``model``; equal inputs give equal decisions."""
    profile = config.profile_for(model)
    # A string seed is hashed with SHA-512, so it is stable across processes.
    rng = random.Random(f"{config.seed}:{model}:{seq}")
    # Every draw happens on every request so changing one rate never shifts the others.
    limited, failed, hung, garbled = rng.random(), rng.random(), rng.random(), rng.random()
    latency = _sample_latency(profile, rng) * config.latency_scale
    malformed: Malformation | None = None
    if garbled < profile.malformed_rate:
        # The lower half of the hit range truncates, the upper half answers in prose.
        malformed = "truncated" if garbled < profile.malformed_rate / 2 else "prose"
    outcome: Outcome = "ok"
    if profile.outage:
        outcome = "outage"
    elif limited < profile.rate_limit_rate:
        outcome = "rate_limited"
    elif failed < profile.error_rate:
        outcome = "error"
    elif hung < profile.timeout_rate:
        outcome = "timeout"
    return Decision(outcome=outcome, latency_s=latency, malformed=malformed)


def _sample_latency(profile: ModelProfile, rng: random.Random) -> float:
    if profile.latency_median_s <= 0:
        return 0.0
    if profile.latency_sigma == 0:
        return profile.latency_median_s
    return rng.lognormvariate(math.log(profile.latency_median_s), profile.latency_sigma)
