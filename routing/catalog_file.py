"""The catalog file as written, and reading it: LiteLLM's proxy config, with Chordal's optional
fields under each entry's ``model_info``.

Every Chordal field may be left out (README, "Bring your LiteLLM config"): ``tier`` is then
inferred from the deployment's price, ``quality`` looked up in the table Chordal ships, and
``expected_latency_s`` taken from the tier (:mod:`routing.catalog_infer`). The blocks around
``model_list`` are read by :mod:`routing.catalog_config`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from routing.catalog_config import (
    LiteLLMSettings,
    ProxySettings,
    RouterSettings,
    proxy_settings,
    with_includes,
)
from routing.catalog_problems import validation_problems
from workers.errors import ConfigurationError
from workers.settings import Settings
from workers.tiers import TaskKind, Tier


class ModelInfo(BaseModel):
    """Chordal's part of a catalog entry; unknown LiteLLM ``model_info`` keys are kept."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(
        default=None, min_length=1, description="This deployment's id, as in LiteLLM's config."
    )
    tier: Tier | None = Field(default=None, description="Unset: inferred from the price.")
    quality: dict[TaskKind, float] | None = Field(
        default=None,
        description="0-1 per task kind, 'general' required; unset: Chordal's table, or unknown.",
    )
    expected_latency_s: float | None = Field(
        default=None, gt=0, description="Unset: the tier's (CHORDAL_TIER_EXPECTED_LATENCY_S)."
    )
    mode: str | None = Field(default=None, description="LiteLLM's mode; only chat is routed.")
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
    def _quality_range(cls, value: dict[TaskKind, float] | None) -> dict[TaskKind, float] | None:
        if value is None:
            return None
        if "general" not in value:
            raise ValueError("quality needs a 'general' score")
        if any(not 0 <= score <= 1 for score in value.values()):
            raise ValueError("quality scores lie between 0 and 1")
        return value


class CatalogEntry(BaseModel):
    """One deployment as LiteLLM's proxy config writes it."""

    model_name: str = Field(min_length=1)
    litellm_params: dict[str, Any]
    model_info: ModelInfo = Field(default_factory=ModelInfo)

    @field_validator("litellm_params")
    @classmethod
    def _has_model(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("model"), str) or not value["model"]:
            raise ValueError("litellm_params.model is required")
        return value

    @field_validator("model_info", mode="before")
    @classmethod
    def _empty_model_info(cls, value: Any) -> Any:
        # `model_info:` with nothing under it is YAML's null: an entry with no model_info.
        return {} if value is None else value


class CatalogFile(BaseModel):
    """The whole YAML file: ``model_list``, and the proxy config's other blocks, if any."""

    # Other top-level blocks (general_settings, ...) are kept, to be warned about.
    model_config = ConfigDict(extra="allow")

    model_list: list[CatalogEntry] = Field(min_length=1)
    litellm_settings: LiteLLMSettings | None = None
    router_settings: RouterSettings | None = None

    def proxy_settings(self) -> ProxySettings:
        """What the blocks around ``model_list`` set, and a line for each thing ignored."""
        return proxy_settings(self.litellm_settings, self.router_settings, self.model_extra or {})


def default_catalog_path() -> Path:
    """The catalog shipped with Chordal."""
    return Path(str(resources.files("routing") / "catalogs" / "default.yaml"))


def default_local_catalog_path() -> Path:
    """The local tier's shipped catalog: SmolLM2-135M-Instruct on llama.cpp's server."""
    return Path(str(resources.files("routing") / "catalogs" / "local.yaml"))


def read_catalog_for(settings: Settings) -> CatalogFile:
    """The catalog in force: the main file, plus the local tier's models when the tier is on.

    Raises ConfigurationError when a local model sits in the main file (it would be routed to
    even with the tier off), a model outside the local tier sits in the local file, or both
    files name one model (several entries of one name within a file are one model group).
    The settings blocks are the main file's.
    """
    main_path = settings.catalog_path or default_catalog_path()
    main = read_catalog(main_path)
    check_tiers(main, path=main_path, local=False)
    if not settings.local_tier:
        return main
    local_path = settings.local_catalog_path or default_local_catalog_path()
    local = read_catalog(local_path)
    check_tiers(local, path=local_path, local=True)
    names = {entry.model_name for entry in main.model_list}
    if duplicates := sorted(names & {entry.model_name for entry in local.model_list}):
        msg = f"catalogs {main_path} and {local_path} both name {', '.join(duplicates)}"
        raise ConfigurationError(msg)
    return main.model_copy(update={"model_list": [*main.model_list, *local.model_list]})


def check_tiers(catalog: CatalogFile, *, path: Path, local: bool) -> None:
    """Raise ConfigurationError unless every entry of the local tier's catalog (``local``), and
    none of the main one, is in tier local."""
    for entry in catalog.model_list:
        tier = entry.model_info.tier
        if (tier is Tier.LOCAL) != local:
            where = (
                "the local catalog holds only tier local"
                if local
                else "local models go in CHORDAL_LOCAL_CATALOG_PATH, which joins only when the "
                "local tier is on"
            )
            placed = f"is in tier {tier}" if tier else "has no tier"
            raise ConfigurationError(f"catalog {path}: {entry.model_name!r} {placed}; {where}")


def read_catalog(path: Path | None = None) -> CatalogFile:
    """Parse and validate a catalog file (with the files it includes); raises
    ConfigurationError with a line per problem, naming the entry and the field."""
    path = path or default_catalog_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read catalog {path}: {exc}") from exc
    raw = with_includes(raw, path=path)
    try:
        return CatalogFile.model_validate(raw)
    except ValidationError as exc:
        lines = "".join(f"\n  {line}" for line in validation_problems(exc, CatalogFile, raw))
        raise ConfigurationError(f"invalid catalog {path}:{lines}") from None  # not the dump


def written_latency_s(info: ModelInfo, latency_s: Mapping[Tier, float]) -> float:
    """An entry's expected latency before LiteLLM prices it: as written, else its written tier's
    default, else the balanced tier's (its tier may yet be inferred from its price)."""
    return info.expected_latency_s or latency_s[info.tier or Tier.BALANCED]


def deployment_id(entry: CatalogEntry) -> str:
    """``model_info.id`` where the entry gives one, else ``<model_name>#<8 hex>``: a hash of its
    litellm_params as written (``os.environ/`` references, not the secrets they name), so the
    id is the same in every profile and on every worker."""
    if entry.model_info.id:
        return entry.model_info.id
    written = json.dumps(entry.litellm_params, sort_keys=True, default=str)
    return f"{entry.model_name}#{hashlib.sha256(written.encode()).hexdigest()[:8]}"
