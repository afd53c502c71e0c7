"""What the router knows about a job and the fleet, and the hard constraints it applies first.

:class:`RouteRequest` is the job as the router sees it (tokens measured); :class:`LiveState` is
what the fleet knows right now. :func:`eligible` applies the hard constraints, in order, to
every *deployment* of the catalog (a model group's deployments may differ in price, context
window, latency or breaker); a constraint that leaves nothing raises the error the caller can
act on: NoEligibleModel (fix the job), CircuitOpen (retry later) or BudgetExceeded (a limit).
:mod:`routing.scoring` then ranks what is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from routing.catalog import Model
from routing.groups import DeploymentStrategy
from routing.latency import LatencyEstimate
from routing.limits import Headroom
from workers.errors import BudgetExceeded, ChordalError, CircuitOpen, NoEligibleModel
from workers.tiers import HIGH_COMPLEXITY, TaskKind, Tier


@dataclass(frozen=True)
class LiveState:
    """What the fleet knows right now, read from Redis and the broker by the router.

    Latency, breakers, rate-limit headroom and calls in flight are keyed by deployment id (a
    group of one deployment: the model's name, see :func:`routing.groups.keyed`).
    """

    latency: Mapping[str, LatencyEstimate] = field(default_factory=dict)
    # Deployments whose breaker is open, with the seconds until each may take a probe call.
    open_breakers: Mapping[str, float] = field(default_factory=dict)
    budget_usd: float | None = None
    budget_label: str = "budget"
    saturated: Mapping[Tier, str] = field(default_factory=dict)
    # Read only for deployments of groups of several, where it decides which one is picked.
    headroom: Mapping[str, Headroom] = field(default_factory=dict)
    in_flight: Mapping[str, int] = field(default_factory=dict)
    strategy: DeploymentStrategy = "simple-shuffle"

    def p50(self, model: Model) -> float:
        """The deployment's median latency: measured, else the catalog's."""
        live = self.latency.get(model.deployment_id)
        return live.p50 if live else model.expected_latency_s

    def p95(self, model: Model) -> float:
        """The deployment's 95th-percentile latency: measured, else the catalog's."""
        live = self.latency.get(model.deployment_id)
        return live.p95 if live else model.expected_latency_s

    def measured(self, model: Model) -> bool:
        """Whether the deployment's latency is measured (else it is the catalog's)."""
        return model.deployment_id in self.latency


NO_LIVE_STATE = LiveState()


@dataclass(frozen=True)
class RouteRequest:
    """What the router needs to know about a job (token counts already measured)."""

    prompt_tokens: int
    max_output_tokens: int
    expected_output_tokens: int
    task_kind: TaskKind = "general"
    complexity: float = 0.5
    tier: Tier | None = None
    max_cost_usd: float | None = None
    max_latency_s: float | None = None
    min_quality: float | None = None
    # Model group names and deployment ids: a deployment is left out if either is listed.
    exclude: frozenset[str] = field(default_factory=frozenset)
    live: LiveState = NO_LIVE_STATE
    # The group a failed call came from: it keeps the job while it has an eligible deployment.
    prefer: str | None = None


@dataclass(frozen=True)
class _Constraint:
    field: str
    keeps: Callable[[Model], bool]
    explain: Callable[[Sequence[Model]], str]
    error: Callable[[str, str], ChordalError] = NoEligibleModel


class WorstCosts(dict[str, float]):
    """Each deployment's worst-case cost for one request, computed once."""

    def __init__(self, request: RouteRequest) -> None:
        super().__init__()
        self.request = request

    def of(self, model: Model) -> float:
        """What a call of the request to ``model`` could cost at most (prompt plus output)."""
        cost = self.get(model.deployment_id)
        if cost is None:
            cost = self[model.deployment_id] = model.cost(
                prompt_tokens=self.request.prompt_tokens,
                completion_tokens=output_budget(self.request, model),
            )
        return cost


def output_budget(request: RouteRequest, model: Model) -> int:
    """The most output tokens a call of ``request`` asks ``model`` for."""
    return min(request.max_output_tokens, model.max_output_tokens)


def excluded(request: RouteRequest, model: Model) -> bool:
    """Whether ``model``'s group or the deployment itself was excluded (already tried)."""
    return model.name in request.exclude or model.deployment_id in request.exclude


def eligible(
    request: RouteRequest, models: Sequence[Model], worst: WorstCosts, *, skip: str = ""
) -> Sequence[Model]:
    """The deployments of ``models`` that pass every constraint but ``skip``; raises the
    first constraint's error that leaves none."""
    remaining = models
    for constraint in _constraints(request, worst):
        if constraint.field == skip:
            continue
        kept = [model for model in remaining if constraint.keeps(model)]
        if not kept:
            raise constraint.error(constraint.explain(remaining), constraint.field)
        remaining = kept
    return remaining


def known_quality_needed(request: RouteRequest) -> str | None:
    """Why the job may go only to models whose quality is known (an unknown one's 0 is a
    placeholder, not a measurement), or None."""
    if request.min_quality is not None:
        return f"the job has min_quality={request.min_quality}"
    if request.complexity >= HIGH_COMPLEXITY:
        return f"the job's complexity {request.complexity:.2f} is high"
    return None


def _constraints(request: RouteRequest, worst: WorstCosts) -> list[_Constraint]:
    kind = request.task_kind
    constraints = [
        _Constraint(
            "exclude",
            lambda m: not excluded(request, m),
            lambda ms: (
                f"every eligible model was already tried: {', '.join(sorted(request.exclude))}"
            ),
        )
    ]
    if request.tier is not None:
        tier = request.tier
        constraints.append(
            _Constraint("tier", lambda m: m.tier == tier, lambda ms: f"no model in tier '{tier}'")
        )
    constraints.append(
        _Constraint(
            "input",
            lambda m: request.prompt_tokens + _answer_floor(request) <= m.context_window,
            lambda ms: (
                f"the prompt is {request.prompt_tokens} tokens; the largest context window "
                f"is {max(m.context_window for m in ms)} tokens"
            ),
        )
    )
    if why := known_quality_needed(request):
        constraints.append(
            _Constraint(
                "min_quality" if request.min_quality is not None else "complexity",
                lambda m: m.quality_known,
                lambda ms: (
                    f"{why}: only models of unknown quality are left "
                    f"({', '.join(sorted({m.name for m in ms}))}); give them model_info.quality"
                ),
            )
        )
    if request.min_quality is not None:
        floor = request.min_quality
        constraints.append(
            _Constraint(
                "min_quality",
                lambda m: m.quality(kind) >= floor,
                lambda ms: (
                    f"min_quality={floor}: the best {kind} quality is "
                    f"{max(m.quality(kind) for m in ms):.2f} "
                    f"({max(ms, key=lambda m: m.quality(kind)).name})"
                ),
            )
        )
    live = request.live
    if request.max_latency_s is not None:
        limit = request.max_latency_s
        constraints.append(
            _Constraint(
                "max_latency_s",
                # Strictly under: a call that timed out at the limit is recorded at the limit.
                lambda m: live.p95(m) < limit,
                lambda ms: (
                    f"max_latency_s={limit}: the fastest model's p95 is "
                    f"{min(live.p95(m) for m in ms):.3f} s ({min(ms, key=live.p95).name})"
                ),
            )
        )
    if request.max_cost_usd is not None:
        budget = request.max_cost_usd
        constraints.append(
            _Constraint(
                "max_cost_usd",
                lambda m: worst.of(m) <= budget,
                lambda ms: (
                    f"max_cost_usd={budget}: the cheapest model could cost up to "
                    f"${min(worst.of(m) for m in ms):.6f} ({min(ms, key=worst.of).name})"
                ),
            )
        )
    if live.budget_usd is not None:
        left = live.budget_usd
        constraints.append(
            _Constraint(
                "budget",
                lambda m: worst.of(m) <= left,
                lambda ms: (
                    f"the {live.budget_label} allows ${left:.6f}: the cheapest eligible model "
                    f"could cost up to ${min(worst.of(m) for m in ms):.6f} "
                    f"({min(ms, key=worst.of).name})"
                ),
                lambda message, _field: BudgetExceeded(message),
            )
        )
    if live.open_breakers:
        opened = live.open_breakers
        constraints.append(
            _Constraint(
                "breaker",
                lambda m: m.deployment_id not in opened,
                lambda ms: (
                    "every eligible model's circuit breaker is open: "
                    + ", ".join(
                        f"{m.deployment_id} (retry in {opened[m.deployment_id]:.1f} s)" for m in ms
                    )
                ),
                lambda message, _field: CircuitOpen(message, _soonest(live)),
            )
        )
    return constraints


def _soonest(live: LiveState) -> float | None:
    # When every candidate is open, the job may wait for the first breaker to half-open.
    finite = [wait for wait in live.open_breakers.values() if math.isfinite(wait)]
    return max(0.0, min(finite)) if finite else None


def _answer_floor(request: RouteRequest) -> int:
    # A prompt that leaves no room for the expected answer does not fit, even if it squeezes in.
    return min(request.expected_output_tokens, request.max_output_tokens)
