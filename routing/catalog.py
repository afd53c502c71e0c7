"""The model catalog: LiteLLM ``model_list`` YAML plus Chordal's fields under ``model_info``.

Loading is two steps so that producers can read the file without LiteLLM: :func:`read_catalog`
parses and validates the YAML; :func:`resolve` adds prices and context windows from LiteLLM's
cost map and applies the profile (``offline`` points every deployment at the simulator while
keeping the real model's price).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workers.errors import ConfigurationError
from workers.settings import Profile, env_secret
from workers.tiers import TaskKind, Tier

SIMULATOR_API_KEY = "chordal-simulator"
DEFAULT_CONTEXT_WINDOW = 8_192
DEFAULT_MAX_OUTPUT = 4_096
# LiteLLM's proxy config keeps a deployment's limits in litellm_params; they are not call kwargs.
ROUTER_ONLY_PARAMS = frozenset({"rpm", "tpm"})


class ModelInfo(BaseModel):
    """Chordal's part of a catalog entry; unknown LiteLLM ``model_info`` keys are kept."""

    model_config = ConfigDict(extra="allow")

    tier: Tier
    quality: dict[TaskKind, float] = Field(description="0-1 per task kind; 'general' required.")
    expected_latency_s: float = Field(gt=0)
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    base_model: str | None = Field(default=None, description="LiteLLM name that prices this one.")
    max_input_tokens: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0, description="Provider's requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Provider's tokens per minute.")

    @field_validator("quality", mode="before")
    @classmethod
    def _scalar_quality(cls, value: Any) -> Any:
        return {"general": value} if isinstance(value, int | float) else value

    @field_validator("quality")
    @classmethod
    def _quality_range(cls, value: dict[TaskKind, float]) -> dict[TaskKind, float]:
        if "general" not in value:
            raise ValueError("quality needs a 'general' score")
        if any(not 0 <= score <= 1 for score in value.values()):
            raise ValueError("quality scores lie between 0 and 1")
        return value


class CatalogEntry(BaseModel):
    """One deployment as LiteLLM's proxy config writes it."""

    model_name: str = Field(min_length=1)
    litellm_params: dict[str, Any]
    model_info: ModelInfo

    @field_validator("litellm_params")
    @classmethod
    def _has_model(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("model"), str) or not value["model"]:
            raise ValueError("litellm_params.model is required")
        return value


class CatalogFile(BaseModel):
    """The whole YAML file."""

    model_list: list[CatalogEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Model:
    """A deployment ready to route to and call."""

    name: str
    tier: Tier
    litellm_params: dict[str, Any]
    price_model: str
    input_cost_per_token: float
    output_cost_per_token: float
    context_window: int
    max_output_tokens: int
    expected_latency_s: float
    quality_by_kind: Mapping[TaskKind, float] = field(default_factory=dict)
    price_source: Literal["litellm", "catalog"] = "litellm"
    provider: str = "unknown"
    rpm: int | None = None
    tpm: int | None = None

    def quality(self, kind: TaskKind) -> float:
        """Quality for ``kind``, falling back to the general score."""
        return self.quality_by_kind.get(kind, self.quality_by_kind["general"])

    def cost(self, *, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for a call of this size at this deployment's prices."""
        return (
            prompt_tokens * self.input_cost_per_token
            + completion_tokens * self.output_cost_per_token
        )


@dataclass(frozen=True)
class Catalog:
    """The deployments the router chooses from."""

    models: tuple[Model, ...]
    profile: Profile

    def get(self, name: str) -> Model:
        """The deployment called ``name``."""
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    @property
    def largest_context_window(self) -> int:
        """The most prompt tokens any deployment accepts."""
        return max(model.context_window for model in self.models)


def default_catalog_path() -> Path:
    """The catalog shipped with Chordal."""
    return Path(str(resources.files("routing") / "catalogs" / "default.yaml"))


def read_catalog(path: Path | None = None) -> CatalogFile:
    """Parse and validate a catalog file; raises ConfigurationError naming the bad entry."""
    path = path or default_catalog_path()
    try:
        raw = yaml.safe_load(path.read_text())
        return CatalogFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read catalog {path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigurationError(f"invalid catalog {path}: {exc}") from exc


def resolve(
    catalog: CatalogFile,
    *,
    profile: Profile,
    simulator_url: str,
    model_cost: Mapping[str, Mapping[str, Any]],
) -> Catalog:
    """Prices, limits and call parameters for every entry under ``profile``."""
    models = tuple(
        _resolve_entry(entry, profile=profile, simulator_url=simulator_url, model_cost=model_cost)
        for entry in catalog.model_list
    )
    return Catalog(models=models, profile=profile)


def _resolve_entry(
    entry: CatalogEntry,
    *,
    profile: Profile,
    simulator_url: str,
    model_cost: Mapping[str, Mapping[str, Any]],
) -> Model:
    info = entry.model_info
    price_model = info.base_model or entry.litellm_params["model"]
    known = model_cost.get(price_model, {})
    input_cost = _first(info.input_cost_per_token, known.get("input_cost_per_token"))
    output_cost = _first(info.output_cost_per_token, known.get("output_cost_per_token"))
    if input_cost is None or output_cost is None:
        msg = (
            f"catalog entry {entry.model_name!r}: LiteLLM has no price for {price_model!r}; "
            "set model_info.base_model or input_cost_per_token/output_cost_per_token"
        )
        raise ConfigurationError(msg)
    if profile == "offline":
        params: dict[str, Any] = {
            "model": f"openai/{entry.model_name}",
            "api_base": simulator_url,
            "api_key": SIMULATOR_API_KEY,
        }
    else:
        params = {
            key: _secret(value)
            for key, value in entry.litellm_params.items()
            if key not in ROUTER_ONLY_PARAMS
        }
    overridden = info.input_cost_per_token is not None or info.output_cost_per_token is not None
    return Model(
        name=entry.model_name,
        tier=info.tier,
        litellm_params=params,
        price_model=price_model,
        input_cost_per_token=float(input_cost),
        output_cost_per_token=float(output_cost),
        context_window=int(
            _first(info.max_input_tokens, known.get("max_input_tokens"), DEFAULT_CONTEXT_WINDOW)
        ),
        max_output_tokens=int(
            _first(info.max_output_tokens, known.get("max_output_tokens"), DEFAULT_MAX_OUTPUT)
        ),
        expected_latency_s=info.expected_latency_s,
        quality_by_kind=dict(info.quality),
        price_source="catalog" if overridden or not known else "litellm",
        provider=str(known.get("litellm_provider") or _prefix(entry.litellm_params["model"])),
        rpm=_first(info.rpm, entry.litellm_params.get("rpm")),
        tpm=_first(info.tpm, entry.litellm_params.get("tpm")),
    )


def _prefix(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "unknown"


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _secret(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("os.environ/"):
        return env_secret(value.removeprefix("os.environ/"))
    return value
