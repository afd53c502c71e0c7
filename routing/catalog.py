"""The model catalog: a LiteLLM proxy config (its ``model_list``, and the blocks around it), with
Chordal's optional fields under each entry's ``model_info``.

Loading is two steps so that producers can read the file without LiteLLM: :func:`read_catalog`
parses and validates the YAML (:mod:`routing.catalog_file`); :func:`resolve` adds prices,
context windows and modes from LiteLLM's cost map, fills in what an entry left out
(:mod:`routing.catalog_infer`), skips what Chordal cannot route, and applies the profile
(``offline`` points every deployment at the simulator while keeping the real model's price).
Several entries may share a ``model_name``: a model group of several deployments.

The local tier's models live in a catalog of their own (``local.yaml``) that joins the main one
only when the tier is on, so a stack without it never routes to a model nobody serves. They are
served by a real OpenAI-compatible server (``CHORDAL_LOCAL_MODEL_URL``) in both profiles.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from routing.catalog_config import ENTRY_PARAM_REASONS, DeploymentPick, ProxySettings
from routing.catalog_file import (
    CatalogEntry,
    CatalogFile,
    ModelInfo,
    check_tiers,
    default_catalog_path,
    default_local_catalog_path,
    deployment_id,
    read_catalog,
    read_catalog_for,
    written_latency_s,
)
from routing.catalog_infer import (
    TierDefaults,
    blended_usd_per_million,
    infer_tier,
    price_key,
    skip_reason,
    table_quality,
)
from routing.catalog_problems import validation_problems
from workers.errors import ConfigurationError
from workers.settings import Profile, Settings, env_secret
from workers.tiers import TaskKind, Tier

__all__ = [
    "Catalog", "CatalogEntry", "CatalogFile", "Model", "ModelInfo", "Skipped", "TierDefaults",
    "catalog_for", "check_tiers", "default_catalog_path", "default_local_catalog_path",
    "deployment_id", "read_catalog", "read_catalog_for", "resolve", "validation_problems",
    "written_latency_s",
]  # fmt: skip

logger = logging.getLogger(__name__)

SIMULATOR_API_KEY = "chordal-simulator"
# llama.cpp, vLLM and Ollama accept any key unless started with one; the OpenAI client that
# LiteLLM uses refuses to send a request without one.
LOCAL_API_KEY = "chordal-local"
DEFAULT_CONTEXT_WINDOW = 8_192
DEFAULT_MAX_OUTPUT = 4_096
# litellm_params that are not sent as call kwargs: a deployment's limits and weight (LiteLLM's
# router reads them), and what Chordal sets on every call itself -- the timeout, the retries (none)
# and max_tokens -- or prices itself. Sending them too would name a kwarg twice.
NOT_CALL_PARAMS = frozenset(
    {"rpm", "tpm", "weight", "timeout", "stream_timeout", "num_retries", "max_retries"}
    | {"max_tokens", "input_cost_per_token", "output_cost_per_token"}
)


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
    # Where the tier and the quality came from: the entry, the price and Chordal's table. A
    # model of unknown quality scores 0 and is never chosen for demanding jobs (scoring.py).
    tier_source: Literal["catalog", "inferred"] = "catalog"
    quality_source: Literal["catalog", "table", "unknown"] = "catalog"
    # The deployment's own call timeout (litellm_params.timeout, else the file's
    # request_timeout); None: CHORDAL_LLM_TIMEOUT_S.
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not self.deployment_id:  # built by hand (tests, tools): its name stands in
            object.__setattr__(self, "deployment_id", self.name)

    @property
    def quality_known(self) -> bool:
        """Whether the quality scores come from the entry or Chordal's table."""
        return self.quality_source != "unknown"

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
class Skipped:
    """A catalog entry Chordal cannot route to, and why."""

    index: int  # from 1, as the validation problems number entries
    model_name: str
    reason: str

    def __str__(self) -> str:
        return f"{_where(self.index, self.model_name)}: skipped: {self.reason}"


@dataclass(frozen=True)
class Catalog:
    """The deployments the router chooses from."""

    models: tuple[Model, ...]
    profile: Profile
    # router_settings.model_group_alias: another name for a model group.
    aliases: Mapping[str, str] = field(default_factory=dict)
    # router_settings.routing_strategy: how a deployment is picked within its group.
    deployment_pick: DeploymentPick | None = None  # router_settings.routing_strategy
    skipped: tuple[Skipped, ...] = ()
    # A line for each setting ignored or not applied, as written in the file.
    notes: tuple[str, ...] = ()

    def get(self, name: str) -> Model:
        """The first deployment of the model group ``name`` (or of the group an alias of that
        name points to)."""
        name = self.group_name(name)
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def group_name(self, name: str) -> str:
        """The model group ``name`` means: an alias's group, else ``name`` itself."""
        return self.aliases.get(name, name)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What loading this catalog has to say: the entries skipped, then the notes."""
        return (*map(str, self.skipped), *self.notes)

    def deployments_of(self, name: str) -> tuple[Model, ...]:
        """Every deployment of the model group ``name`` (its ``model_name``), in catalog order."""
        return tuple(model for model in self.models if model.name == name)

    def deployment(self, deployment_id: str) -> Model:
        """The deployment ``deployment_id``."""
        for model in self.models:
            if model.deployment_id == deployment_id:
                return model
        raise KeyError(deployment_id)

    @property
    def largest_context_window(self) -> int:
        """The most prompt tokens any deployment accepts."""
        return max(model.context_window for model in self.models)


def catalog_for(settings: Settings, *, model_cost: Mapping[str, Mapping[str, Any]]) -> Catalog:
    """The catalog in force for ``settings``, priced from ``model_cost`` (LiteLLM's map); what it
    skips or ignores is logged, a warning a line, once."""
    path, file = settings.catalog_path or default_catalog_path(), read_catalog_for(settings)
    try:
        catalog = resolve(
            file,
            profile=settings.resolved_profile,
            simulator_url=settings.simulator_url,
            local_url=settings.local_model_url,
            model_cost=model_cost,
            defaults=TierDefaults.from_settings(settings),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"catalog {path}: {exc}") from None
    for line in catalog.warnings:
        logger.warning("catalog %s: %s", path, line)
    return catalog


def resolve(
    catalog: CatalogFile,
    *,
    profile: Profile,
    simulator_url: str,
    model_cost: Mapping[str, Mapping[str, Any]],
    local_url: str | None = None,
    defaults: TierDefaults | None = None,
) -> Catalog:
    """Prices, limits and call parameters for every entry Chordal can route under ``profile``;
    local models are called at ``local_url`` unless their entry names its own ``api_base``.

    Raises ConfigurationError when no entry is left to route to."""
    proxy, defaults = catalog.proxy_settings(), defaults or TierDefaults()
    models: list[Model] = []
    skipped: list[Skipped] = []
    notes: list[str] = []
    for index, entry in enumerate(catalog.model_list, start=1):
        resolved = _resolve_entry(
            entry,
            index,
            profile=profile,
            simulator_url=simulator_url,
            local_url=local_url,
            model_cost=model_cost,
            proxy=proxy,
            defaults=defaults,
        )
        if isinstance(resolved, Skipped):
            skipped.append(resolved)
            continue
        models.append(resolved)
        notes += [
            f"{_where(index, entry.model_name)}: litellm_params.{key}: ignored: {why}"
            for key, why in ENTRY_PARAM_REASONS.items()
            if key in entry.litellm_params
        ]
    if not models:
        lines = "".join(f"\n  {line}" for line in skipped)
        raise ConfigurationError(f"no deployment in the catalog can be routed to:{lines}")
    aliases, alias_notes = proxy.aliases_of({model.name for model in models})
    return Catalog(
        models=tuple(models),
        profile=profile,
        aliases=aliases,
        deployment_pick=proxy.deployment_pick,
        skipped=tuple(skipped),
        notes=(*proxy.notes, *notes, *alias_notes),
    )


def _resolve_entry(
    entry: CatalogEntry,
    index: int,
    *,
    profile: Profile,
    simulator_url: str,
    local_url: str | None,
    model_cost: Mapping[str, Mapping[str, Any]],
    proxy: ProxySettings,
    defaults: TierDefaults,
) -> Model | Skipped:
    info, written = entry.model_info, entry.litellm_params
    named = info.base_model or written["model"]
    key = price_key(model_cost, named)
    known = model_cost.get(key, {}) if key else {}
    # A price written in model_info or (as LiteLLM also reads it) litellm_params wins.
    given = [
        _first(getattr(info, price), written.get(price))
        for price in ("input_cost_per_token", "output_cost_per_token")
    ]
    input_cost = _first(given[0], known.get("input_cost_per_token"))
    output_cost = _first(given[1], known.get("output_cost_per_token"))
    why = skip_reason(
        model_name=entry.model_name,
        model=written["model"],
        mode=info.mode or known.get("mode"),
        priced=input_cost is not None and output_cost is not None,
        price_model=named,
    )
    if why is not None:
        return Skipped(index, entry.model_name, why)
    provider = str(known.get("litellm_provider") or _prefix(written["model"]))
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
    if proxy.drop_params:
        params.setdefault("drop_params", True)
    tier = info.tier or infer_tier(
        blended_usd_per_million(float(input_cost), float(output_cost)), defaults.price_bands_usd
    )
    quality = info.quality or table_quality([written["model"], info.base_model, key])
    weight, timeout = written.get("weight", 1.0), written.get("timeout")
    return Model(
        name=entry.model_name,
        tier=tier,
        litellm_params=params,
        price_model=key or named,
        input_cost_per_token=float(input_cost),
        output_cost_per_token=float(output_cost),
        context_window=int(
            _first(info.max_input_tokens, known.get("max_input_tokens"), DEFAULT_CONTEXT_WINDOW)
        ),
        max_output_tokens=int(
            _first(
                info.max_output_tokens,
                _positive(written.get("max_tokens")),
                known.get("max_output_tokens"),
                DEFAULT_MAX_OUTPUT,
            )
        ),
        expected_latency_s=info.expected_latency_s or defaults.expected_latency_s[tier],
        quality_by_kind=dict(quality) if quality else {"general": 0.0},
        price_source="catalog" if given != [None, None] or not known else "litellm",
        provider=provider,
        rpm=_first(info.rpm, written.get("rpm")),
        tpm=_first(info.tpm, written.get("tpm")),
        deployment_id=deployment_id(entry),
        weight=float(weight) if isinstance(weight, int | float) and weight > 0 else 1.0,
        tier_source="catalog" if info.tier else "inferred",
        quality_source="catalog" if info.quality else "table" if quality else "unknown",
        timeout_s=_positive(timeout) or proxy.request_timeout_s,
    )


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
        if key not in NOT_CALL_PARAMS
    }


def _where(index: int, model_name: str) -> str:
    return f"catalog entry {index} (model_name {json.dumps(model_name)})"


def _prefix(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "unknown"


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _positive(value: Any) -> float | None:
    # A number LiteLLM would take (timeout, max_tokens); anything else is not Chordal's to read.
    return value if isinstance(value, int | float) and value > 0 else None


def _secret(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("os.environ/"):
        return env_secret(value.removeprefix("os.environ/"))
    return value
