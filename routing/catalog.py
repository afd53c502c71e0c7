"""The model catalog: LiteLLM ``model_list`` YAML plus Chordal's fields under ``model_info``.

Loading is two steps so that producers can read the file without LiteLLM: :func:`read_catalog`
parses and validates the YAML; :func:`resolve` adds prices and context windows from LiteLLM's
cost map and applies the profile (``offline`` points every deployment at the simulator while
keeping the real model's price).

The local tier's models live in a catalog of their own (``local.yaml``) that joins the main one
only when the tier is on, so a stack without it never routes to a model nobody serves. They are
served by a real OpenAI-compatible server (``CHORDAL_LOCAL_MODEL_URL``) in both profiles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workers.errors import ConfigurationError
from workers.settings import Profile, Settings, env_secret
from workers.tiers import TaskKind, Tier

SIMULATOR_API_KEY = "chordal-simulator"
# llama.cpp, vLLM and Ollama accept any key unless started with one; the OpenAI client that
# LiteLLM uses refuses to send a request without one.
LOCAL_API_KEY = "chordal-local"
DEFAULT_CONTEXT_WINDOW = 8_192
DEFAULT_MAX_OUTPUT = 4_096
# LiteLLM's proxy config keeps a deployment's limits in litellm_params; they are not call kwargs.
ROUTER_ONLY_PARAMS = frozenset({"rpm", "tpm", "weight"})


class ModelInfo(BaseModel):
    """Chordal's part of a catalog entry; unknown LiteLLM ``model_info`` keys are kept."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(
        default=None, min_length=1, description="This deployment's id, as in LiteLLM's config."
    )
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
    # The deployment within its model group (``name``): model_info.id, or a stable hash of the
    # entry's litellm_params as written (deployment_id()); ``weight`` as LiteLLM's.
    deployment_id: str = ""
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.deployment_id:  # built by hand (tests, tools): its name stands in
            object.__setattr__(self, "deployment_id", self.name)

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


def default_local_catalog_path() -> Path:
    """The local tier's shipped catalog: SmolLM2-135M-Instruct on llama.cpp's server."""
    return Path(str(resources.files("routing") / "catalogs" / "local.yaml"))


def read_catalog_for(settings: Settings) -> CatalogFile:
    """The catalog in force: the main file, plus the local tier's models when the tier is on.

    Raises ConfigurationError when a local model sits in the main file (it would be routed to
    even with the tier off), a model outside the local tier sits in the local file, or two
    entries share a name.
    """
    main_path = settings.catalog_path or default_catalog_path()
    main = read_catalog(main_path)
    _check_tiers(main, path=main_path, local=False)
    if not settings.local_tier:
        return main
    local_path = settings.local_catalog_path or default_local_catalog_path()
    local = read_catalog(local_path)
    _check_tiers(local, path=local_path, local=True)
    entries = [*main.model_list, *local.model_list]
    names = [entry.model_name for entry in entries]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        msg = f"catalogs {main_path} and {local_path} both name {', '.join(duplicates)}"
        raise ConfigurationError(msg)
    return CatalogFile(model_list=entries)


def _check_tiers(catalog: CatalogFile, *, path: Path, local: bool) -> None:
    for entry in catalog.model_list:
        if (entry.model_info.tier is Tier.LOCAL) != local:
            where = (
                "the local catalog holds only tier local"
                if local
                else "local models go in CHORDAL_LOCAL_CATALOG_PATH, which joins only when the "
                "local tier is on"
            )
            tier = entry.model_info.tier
            raise ConfigurationError(
                f"catalog {path}: {entry.model_name!r} is in tier {tier}; {where}"
            )


def catalog_for(settings: Settings, *, model_cost: Mapping[str, Mapping[str, Any]]) -> Catalog:
    """The catalog in force for ``settings``, priced from ``model_cost`` (LiteLLM's map)."""
    return resolve(
        read_catalog_for(settings),
        profile=settings.resolved_profile,
        simulator_url=settings.simulator_url,
        local_url=settings.local_model_url,
        model_cost=model_cost,
    )


def read_catalog(path: Path | None = None) -> CatalogFile:
    """Parse and validate a catalog file; raises ConfigurationError naming the bad entry."""
    path = path or default_catalog_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read catalog {path}: {exc}") from exc
    try:
        return CatalogFile.model_validate(raw)
    except ValidationError as exc:
        lines = "".join(f"\n  {line}" for line in validation_problems(exc, CatalogFile, raw))
        raise ConfigurationError(f"invalid catalog {path}:{lines}") from None  # not the dump


def validation_problems(error: ValidationError, model: type[BaseModel], raw: Any) -> list[str]:
    """One line per problem in ``error`` (from validating ``raw`` as ``model``): the catalog entry
    (from 1, with its ``model_name``), the field and what it expects; not pydantic's dump."""
    entries = raw.get("model_list") if isinstance(raw, dict) else None
    problems = []
    for item in error.errors(include_url=False):
        loc, where = list(item["loc"]), "catalog"
        if loc[:1] == ["model_list"] and len(loc) > 1 and isinstance(loc[1], int):
            entry = entries[loc[1]] if isinstance(entries, list) else None
            name = entry.get("model_name") if isinstance(entry, dict) else None
            named = f" (model_name {json.dumps(name)})" if isinstance(name, str) and name else ""
            where, loc = f"catalog entry {loc[1] + 1}{named}", loc[2:]
        field = ".".join(map(str, loc[:-2] if loc[-1:] == ["[key]"] else loc))
        problems.append(": ".join(filter(None, [where, field, _problem(item, model)])))
    return problems


def _problem(item: Any, model: type[BaseModel]) -> str:
    loc, kind, message = list(item["loc"]), item["type"], str(item["msg"])
    if loc[-1:] == ["[key]"]:  # a mapping's key: loc is [..., mapping, key, "[key]"]
        key_type = get_args(_annotation_at(model, loc[:-2]))[:1]
        expected = _expected(key_type[0]) if key_type else message
        return f"key {_shown(item['input'])} is not allowed; expected {expected}"
    expected = _expected(_annotation_at(model, loc))
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "missing":
        return f"missing; expected {expected}" if expected else "missing"
    if expected and kind in {"enum", "literal_error", "model_type", "dict_type", "list_type"}:
        return f"got {_shown(item['input'])}; expected {expected}"
    message = message.removeprefix("Input ")
    return f"got {_shown(item['input'])}; {message[:1].lower()}{message[1:]}"


def _annotation_at(model: type[BaseModel], loc: list[Any]) -> Any:
    # The type declared at ``loc`` (``X | None`` read as ``X``), or None where it is unknown.
    current: Any = model
    for part in [*loc, None]:
        args = [arg for arg in get_args(current) if arg is not type(None)]
        if isinstance(current, UnionType) and len(args) == 1:
            current = args[0]
        if part is None or current is None:
            break
        if isinstance(current, type) and issubclass(current, BaseModel):
            found = current.model_fields.get(str(part))
            current = found.annotation if found is not None else None
        else:
            current = get_args(current)[-1] if get_origin(current) in {list, dict} else None
    return current


def _expected(annotation: Any) -> str | None:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(str(member.value) for member in annotation)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(str, get_args(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        required = [name for name, info in annotation.model_fields.items() if info.is_required()]
        return "a mapping with " + ", ".join(required)
    if get_origin(annotation) is list:
        return f"a list, each {_expected(get_args(annotation)[0]) or 'item'}"
    if get_origin(annotation) is dict:
        keys, values = (_expected(arg) or "" for arg in get_args(annotation))
        named = keys.startswith("one of ") and values
        return f"a mapping of {keys.removeprefix('one of ')} to {values}" if named else "a mapping"
    return {str: "text", int: "a whole number", float: "a number"}.get(annotation)


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str) else str(value)
    return {type(None): "nothing", dict: "a mapping", list: "a list"}.get(type(value), text[:60])


def resolve(
    catalog: CatalogFile,
    *,
    profile: Profile,
    simulator_url: str,
    model_cost: Mapping[str, Mapping[str, Any]],
    local_url: str | None = None,
) -> Catalog:
    """Prices, limits and call parameters for every entry under ``profile``; local models are
    called at ``local_url`` unless their entry names its own ``api_base``."""
    models = tuple(
        _resolve_entry(
            entry,
            profile=profile,
            simulator_url=simulator_url,
            local_url=local_url,
            model_cost=model_cost,
        )
        for entry in catalog.model_list
    )
    return Catalog(models=models, profile=profile)


def _resolve_entry(
    entry: CatalogEntry,
    *,
    profile: Profile,
    simulator_url: str,
    local_url: str | None,
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
    provider = str(known.get("litellm_provider") or _prefix(entry.litellm_params["model"]))
    if info.tier is Tier.LOCAL:
        params, provider = _local_params(entry, local_url), "local"
    elif profile == "offline":
        params = {
            "model": f"openai/{entry.model_name}",
            "api_base": simulator_url,
            "api_key": SIMULATOR_API_KEY,
        }
    else:
        params = _written_params(entry)
    overridden = info.input_cost_per_token is not None or info.output_cost_per_token is not None
    weight = entry.litellm_params.get("weight", 1.0)
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
        provider=provider,
        rpm=_first(info.rpm, entry.litellm_params.get("rpm")),
        tpm=_first(info.tpm, entry.litellm_params.get("tpm")),
        deployment_id=deployment_id(entry),
        weight=float(weight) if isinstance(weight, int | float) and weight > 0 else 1.0,
    )


def deployment_id(entry: CatalogEntry) -> str:
    """``model_info.id`` where the entry gives one, else ``<model_name>#<8 hex>``: a hash of its
    litellm_params as written (``os.environ/`` references, not the secrets they name), so the
    id is the same in every profile and on every worker."""
    if entry.model_info.id:
        return entry.model_info.id
    written = json.dumps(entry.litellm_params, sort_keys=True, default=str)
    return f"{entry.model_name}#{hashlib.sha256(written.encode()).hexdigest()[:8]}"


def _local_params(entry: CatalogEntry, local_url: str | None) -> dict[str, Any]:
    # A local model is real in both profiles: the simulator never stands in for it.
    params = _written_params(entry)
    if "api_base" not in params:
        if local_url is None:
            msg = (
                f"catalog entry {entry.model_name!r} is in the local tier, which has no server: "
                "set CHORDAL_LOCAL_MODEL_URL, or run `chordal dev --local-model`"
            )
            raise ConfigurationError(msg)
        params["api_base"] = local_url
    params.setdefault("api_key", LOCAL_API_KEY)
    return params


def _written_params(entry: CatalogEntry) -> dict[str, Any]:
    return {
        key: _secret(value)
        for key, value in entry.litellm_params.items()
        if key not in ROUTER_ONLY_PARAMS
    }


def _prefix(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "unknown"


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _secret(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("os.environ/"):
        return env_secret(value.removeprefix("os.environ/"))
    return value
