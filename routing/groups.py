"""Model groups: several deployments under one ``model_name``, as LiteLLM's router has them.

A catalog entry is a *deployment* (``Model.deployment_id``); entries sharing a ``model_name``
form a *group* (``Model.name``): the same model on OpenAI and on Azure, or in two regions. The
router scores a group as one model and then picks one of its deployments; the fleet's state
(breaker, rate limits, live latency, calls in flight, the ledger's deployment) is kept per
deployment, so one region's outage opens one breaker and its jobs fail over to the other.

* **State keys.** A deployment's id is its ``model_info.id`` where the entry gives one. Without
  one, :func:`keyed` gives the deployment of a group of one its group's name (a catalog without
  groups keeps the keys, labels and names it had before groups existed:
  ``chordal:breaker:gpt-5``), and a deployment of a group of several keeps ``<model_name>#<hash>``.
  :func:`state_keys` applies the same rule to the raw entries that the CLI and the exporter
  read without LiteLLM.
* **Scoring a group** (:func:`faces`): from the deployments that passed every constraint, the
  cheapest one stands for the group (its price, quality and tier), with the group's latency
  blended: the mean p50 of those deployments, weighted by ``weight`` as traffic is.
* **Picking a deployment** (:func:`pick`): among the group's eligible deployments (breaker not
  open), those whose fleet-wide rate limit has room for the call; then ``simple-shuffle``
  (LiteLLM's default: at random, in proportion to ``weight``) or ``least-busy`` (fewest calls in
  flight fleet-wide, ties shuffled by weight).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from routing.catalog import Catalog, Model
from routing.catalog_config import DeploymentPick
from routing.decision import RoutingDecision
from routing.limits import Headroom
from workers.errors import ConfigurationError

# LiteLLM's strategy names: from CHORDAL_DEPLOYMENT_STRATEGY, else the catalog's routing_strategy.
DeploymentStrategy = DeploymentPick
STRATEGIES: tuple[DeploymentStrategy, ...] = ("simple-shuffle", "least-busy")


def keyed(catalog: Catalog) -> Catalog:
    """``catalog`` with each group of one deployment keyed by the group's name (see the module).

    Raises ConfigurationError when two deployments share an id, or a group's deployments are in
    different tiers: a job's queue is its group's tier, and the local tier's privacy promise
    (never a provider) must hold whichever deployment is picked.
    """
    keys = state_keys([(model.name, model.deployment_id) for model in catalog.models])
    models = tuple(
        replace(model, deployment_id=key) for model, key in zip(catalog.models, keys, strict=True)
    )
    ids = Counter(model.deployment_id for model in models)
    if clashes := sorted(key for key, count in ids.items() if count > 1):
        msg = (
            f"catalog: deployments share the id {', '.join(clashes)}; give each deployment of a "
            "model group its own model_info.id"
        )
        raise ConfigurationError(msg)
    for name in dict.fromkeys(model.name for model in models):
        tiers = {str(model.tier) for model in models if model.name == name}
        if len(tiers) > 1:
            msg = (
                f"catalog: the deployments of {name!r} are in tiers {', '.join(sorted(tiers))}; "
                "a model group's deployments share one tier"
            )
            raise ConfigurationError(msg)
    return replace(catalog, models=models)


def decided(catalog: Catalog, decision: RoutingDecision) -> Model:
    """The deployment ``decision`` names; a decision made before model groups (no deployment)
    or naming a deployment the catalog no longer has gets its group's first. Raises KeyError
    when the catalog has no such group."""
    if decision.deployment is not None:
        try:
            return catalog.deployment(decision.deployment)
        except KeyError:
            pass
    return catalog.get(decision.model)


def state_keys(deployments: Sequence[tuple[str, str]]) -> list[str]:
    """The fleet-state key of each ``(group, deployment id)``, by :func:`keyed`'s rule."""
    sizes = Counter(group for group, _ in deployments)
    return [
        group if sizes[group] == 1 and _hashed(group, key) else key for group, key in deployments
    ]


def _hashed(group: str, key: str) -> bool:
    # deployment_id()'s own form, for an entry that gave no model_info.id.
    return re.fullmatch(re.escape(group) + r"#[0-9a-f]{8}", key) is not None


def grouped(models: Sequence[Model]) -> dict[str, tuple[Model, ...]]:
    """``models`` by group, groups and deployments in catalog order."""
    groups: dict[str, list[Model]] = {}
    for model in models:
        groups.setdefault(model.name, []).append(model)
    return {name: tuple(members) for name, members in groups.items()}


@dataclass(frozen=True)
class Face:
    """A model group as the scorer ranks it."""

    model: Model
    """The group's cheapest eligible deployment: its price, quality and tier score the group."""
    p50: float
    """The group's latency: its eligible deployments' p50, weighted by ``weight``."""
    live: bool
    """Whether any of those p50s was measured (else all are catalog figures)."""
    deployments: tuple[Model, ...]
    """The group's eligible deployments, in catalog order."""


def faces(
    models: Sequence[Model],
    *,
    cost: Callable[[Model], float],
    p50: Callable[[Model], float],
    live: Callable[[Model], bool],
) -> list[Face]:
    """One :class:`Face` per group among ``models`` (the deployments that passed every
    constraint), in catalog order; ``cost`` is a deployment's expected cost for the job."""
    found = []
    for members in grouped(models).values():
        weight = sum(member.weight for member in members)
        found.append(
            Face(
                model=min(members, key=cost),  # the first of equals: catalog order
                p50=sum(member.weight * p50(member) for member in members) / weight,
                live=any(live(member) for member in members),
                deployments=members,
            )
        )
    return found


def has_room(headroom: Headroom | None, *, tokens: int) -> bool:
    """Whether a deployment's fleet-wide rate limit can take a call of ``tokens`` now."""
    if headroom is None:
        return True
    requests, left = headroom["requests"], headroom["tokens"]
    return (
        headroom["blocked_for_s"] <= 0
        and (requests is None or requests > 0)
        and (left is None or left >= tokens)
    )


def pick(
    deployments: Sequence[Model],
    *,
    strategy: DeploymentStrategy = "simple-shuffle",
    full: Collection[str] = (),
    in_flight: Mapping[str, int] | None = None,
    rng: random.Random | None = None,
) -> Model:
    """One of a group's eligible ``deployments`` for a call.

    Those not in ``full`` (deployment ids whose rate limit has no room) come first; when every
    one is full, all of them stay candidates (admission refuses, the job fails over or waits).
    ``least-busy`` keeps those with the fewest calls ``in_flight``; then one is drawn at random
    in proportion to ``weight`` (LiteLLM's ``simple-shuffle``).
    """
    if not deployments:
        raise ValueError("a group with no eligible deployment has nothing to pick")
    pool = [d for d in deployments if d.deployment_id not in full] or list(deployments)
    if strategy == "least-busy" and len(pool) > 1:
        busy = in_flight or {}
        fewest = min(busy.get(d.deployment_id, 0) for d in pool)
        pool = [d for d in pool if busy.get(d.deployment_id, 0) == fewest]
    if len(pool) == 1:
        return pool[0]
    return (rng or _RNG).choices(pool, weights=[d.weight for d in pool])[0]


# Not for security: spreading calls over deployments needs no unpredictable draw.
_RNG = random.Random()  # nosec B311
