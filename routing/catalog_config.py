"""The blocks of a LiteLLM proxy config around its ``model_list``: what Chordal honours, what it
maps onto its own behaviour, and what it ignores, saying so.

- ``litellm_settings``: ``request_timeout`` is every call's timeout and ``drop_params`` is
  passed to every call; ``num_retries`` is ignored (Chordal is the one retry layer), as are
  callbacks, caching and fallbacks, each with a line saying what takes its place.
- ``router_settings``: ``routing_strategy`` becomes how a deployment is picked within its model
  group (``simple-shuffle``: weighted, ``least-busy``: least in flight; others are warned
  about), ``model_group_alias`` becomes the catalog's aliases, ``timeout`` is the call timeout
  when ``request_timeout`` is not given, and the Redis settings are ignored: Chordal's own broker
  holds the fleet's state.
- ``include``: the files named are read, their ``model_list`` appended (:func:`with_includes`).
- Any other block (``general_settings``, ``environment_variables``, ...): ignored, with a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from workers.errors import ConfigurationError

# LiteLLM's routing strategies that Chordal's pick within a group follows (routing/groups.py).
DeploymentPick = Literal["simple-shuffle", "least-busy"]
STRATEGIES: tuple[DeploymentPick, ...] = ("simple-shuffle", "least-busy")
RETRY_LAYER = "Chordal is the retry layer (LiteLLM makes one attempt per call)"
REROUTES = "Chordal re-routes a failed call to the next-best model itself"
# Why each known key of a block is ignored; a key not listed gets IGNORED.
IGNORED = "Chordal does not apply it"
LITELLM_REASONS = {
    "num_retries": RETRY_LAYER,
    "success_callback": "Chordal records every call itself (metrics, traces, the cost ledger)",
    "failure_callback": "Chordal records every call itself (metrics, traces, the cost ledger)",
    "callbacks": "Chordal records every call itself (metrics, traces, the cost ledger)",
    "cache": "Chordal does not cache answers",
    "cache_params": "Chordal does not cache answers",
    "fallbacks": REROUTES,
    "context_window_fallbacks": REROUTES,
    "default_fallbacks": REROUTES,
    "set_verbose": "Chordal logs by CHORDAL_LOG_LEVEL",
    "json_logs": "Chordal logs JSON by CHORDAL_LOG_JSON",
}
ROUTER_REASONS = {
    "num_retries": RETRY_LAYER,
    "retry_policy": RETRY_LAYER,
    "retry_after": RETRY_LAYER,
    "max_fallbacks": REROUTES,
    "fallbacks": REROUTES,
    "context_window_fallbacks": REROUTES,
    "allowed_fails": "Chordal's circuit breakers take its place (CHORDAL_BREAKER_*)",
    "allowed_fails_policy": "Chordal's circuit breakers take its place (CHORDAL_BREAKER_*)",
    "cooldown_time": "Chordal's circuit breakers take its place (CHORDAL_BREAKER_*)",
    "enable_pre_call_checks": "Chordal checks every deployment's context window itself",
}
# litellm_params of one entry that Chordal leaves out of the call, and why.
ENTRY_PARAM_REASONS = {
    "num_retries": RETRY_LAYER,
    "max_retries": RETRY_LAYER,
    "stream_timeout": "Chordal gives a streamed call the deployment's timeout",
}
BLOCK_REASONS = {
    "general_settings": "the LiteLLM proxy server's own settings",
    "environment_variables": "set them in the workers' environment (os.environ/NAME is read "
    "from it)",
}
REDIS_NOTE = "ignored: Chordal's own broker (CHORDAL_BROKER_URL) holds the fleet's state"


class AliasTarget(BaseModel):
    """``model_group_alias: {alias: {model: group, hidden: true}}``, LiteLLM's long form."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class LiteLLMSettings(BaseModel):
    """``litellm_settings``: the two keys Chordal honours; the rest are kept to be warned about."""

    model_config = ConfigDict(extra="allow")

    request_timeout: float | None = Field(default=None, gt=0)
    drop_params: bool = False


class RouterSettings(BaseModel):
    """``router_settings``: the keys Chordal maps; the rest are kept to be warned about."""

    model_config = ConfigDict(extra="allow")

    routing_strategy: str | None = None
    model_group_alias: dict[str, str | AliasTarget] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class ProxySettings:
    """What the settings blocks of one catalog file set, and a line for each thing ignored."""

    request_timeout_s: float | None = None
    drop_params: bool = False
    deployment_pick: DeploymentPick | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def aliases_of(self, groups: set[str]) -> tuple[dict[str, str], list[str]]:
        """The aliases that name one of ``groups``, and a line for each that does not."""
        kept: dict[str, str] = {}
        notes = []
        for alias, group in self.aliases.items():
            if alias in groups:
                notes.append(
                    f"router_settings.model_group_alias.{alias}: ignored: a model group "
                    "has that name"
                )
            elif group not in groups:
                notes.append(
                    f"router_settings.model_group_alias.{alias}: ignored: no routable model "
                    f"group {group!r}"
                )
            else:
                kept[alias] = group
        return kept, notes


def proxy_settings(
    litellm: LiteLLMSettings | None, router: RouterSettings | None, others: Mapping[str, Any]
) -> ProxySettings:
    """Read the blocks of a catalog file: ``others`` holds its top-level keys not modelled."""
    litellm, router = litellm or LiteLLMSettings(), router or RouterSettings()
    notes = [
        f"litellm_settings.{key}: ignored: {LITELLM_REASONS.get(key, IGNORED)}"
        for key in litellm.model_extra or {}
    ]
    pick: DeploymentPick | None = None
    if router.routing_strategy is not None:
        if router.routing_strategy in STRATEGIES:
            pick = router.routing_strategy
        else:
            notes.append(
                f"router_settings.routing_strategy {router.routing_strategy}: not applied: "
                "Chordal scores models on cost, latency and quality, then picks a group's "
                "deployment by weight (simple-shuffle and least-busy map onto Chordal)"
            )
    extra = router.model_extra or {}
    notes += [
        f"router_settings.{key}: ignored: {ROUTER_REASONS.get(key, IGNORED)}"
        for key in extra
        if not key.startswith("redis_")
    ]
    if redis := [key for key in extra if key.startswith("redis_")]:
        notes.append(f"router_settings.{', '.join(redis)}: {REDIS_NOTE}")
    notes += [
        f"{key}: ignored: {BLOCK_REASONS.get(key, 'not a block Chordal reads')}" for key in others
    ]
    aliases = {
        alias: target if isinstance(target, str) else target.model
        for alias, target in router.model_group_alias.items()
    }
    return ProxySettings(
        request_timeout_s=litellm.request_timeout or router.timeout,
        drop_params=litellm.drop_params,
        deployment_pick=pick,
        aliases=aliases,
        notes=tuple(notes),
    )


def with_includes(raw: Any, *, path: Path) -> Any:
    """``raw`` (a parsed catalog file) with the ``model_list`` of every file its ``include``
    names appended, as LiteLLM's proxy does; paths are relative to ``path``'s folder."""
    if not isinstance(raw, dict) or "include" not in raw:
        return raw
    raw = dict(raw)
    includes = raw.pop("include")
    names = includes if isinstance(includes, list) else [includes]
    written = raw.get("model_list")
    if written is not None and not isinstance(written, list):
        return raw  # validation says what is wrong with it
    entries = list(written or [])
    for name in names:
        included = path.parent / str(name)
        try:
            part = yaml.safe_load(included.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read {included}, included by {path}: {exc}") from exc
        if not isinstance(part, dict) or not isinstance(part.get("model_list"), list):
            raise ConfigurationError(f"{included}, included by {path}, has no model_list")
        entries.extend(part["model_list"])
    return {**raw, "model_list": entries}
