"""Choosing a deployment for a job: hard constraints first, then a weighted score.

The score trades quality against cost by the job's complexity ``c`` (0-1)::

    score = c * quality - (1 - c) * cost_rank - LATENCY_WEIGHT * latency_rank

``cost_rank`` and ``latency_rank`` place each candidate between the cheapest/fastest (0) and the
dearest/slowest (1) eligible candidate, on a log scale because prices span three orders of
magnitude. A simple job therefore goes to the cheapest adequate model; a complex one to the
strongest it may afford.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from routing.catalog import Catalog, Model
from routing.decision import CandidateScore, RoutingDecision
from workers.errors import NoEligibleModel
from workers.tiers import TaskKind, Tier

LATENCY_WEIGHT = 0.15
CANDIDATES_KEPT = 5


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
    exclude: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class _Constraint:
    field: str
    keeps: Callable[[Model], bool]
    explain: Callable[[Sequence[Model]], str]


def choose(request: RouteRequest, catalog: Catalog) -> RoutingDecision:
    """The best deployment for ``request``; raises NoEligibleModel naming the constraint."""
    remaining = _eligible(request, catalog)
    scored = sorted(_score(request, remaining), key=lambda item: item.score, reverse=True)
    best = scored[0]
    chosen = catalog.get(best.model)
    return RoutingDecision(
        model=best.model,
        tier=chosen.tier,
        task_kind=request.task_kind,
        complexity=request.complexity,
        prompt_tokens=request.prompt_tokens,
        max_output_tokens=_output_budget(request, chosen),
        expected_cost_usd=best.expected_cost_usd,
        max_cost_usd=best.max_cost_usd,
        reason=_reason(request, best, len(scored)),
        excluded=sorted(request.exclude),
        candidates=scored[:CANDIDATES_KEPT],
    )


def cheapest_worst_case(request: RouteRequest, catalog: Catalog) -> float:
    """The least any eligible deployment could cost for ``request`` (prompt plus max output).

    This is what a budget must hold for the request to run at all; raises NoEligibleModel.
    """
    return min(_worst_cost(request, model) for model in _eligible(request, catalog))


def _eligible(request: RouteRequest, catalog: Catalog) -> Sequence[Model]:
    remaining: Sequence[Model] = catalog.models
    for constraint in _constraints(request):
        kept = [model for model in remaining if constraint.keeps(model)]
        if not kept:
            raise NoEligibleModel(constraint.explain(remaining), constraint.field)
        remaining = kept
    return remaining


def _worst_cost(request: RouteRequest, model: Model) -> float:
    return model.cost(
        prompt_tokens=request.prompt_tokens,
        completion_tokens=_output_budget(request, model),
    )


def _output_budget(request: RouteRequest, model: Model) -> int:
    return min(request.max_output_tokens, model.max_output_tokens)


def _constraints(request: RouteRequest) -> list[_Constraint]:
    kind = request.task_kind
    constraints = [
        _Constraint(
            "exclude",
            lambda m: m.name not in request.exclude,
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
    if request.max_latency_s is not None:
        limit = request.max_latency_s
        constraints.append(
            _Constraint(
                "max_latency_s",
                lambda m: m.expected_latency_s <= limit,
                lambda ms: (
                    f"max_latency_s={limit}: the fastest model expects "
                    f"{min(m.expected_latency_s for m in ms)} s "
                    f"({min(ms, key=lambda m: m.expected_latency_s).name})"
                ),
            )
        )
    if request.max_cost_usd is not None:
        budget = request.max_cost_usd
        constraints.append(
            _Constraint(
                "max_cost_usd",
                lambda m: _worst_cost(request, m) <= budget,
                lambda ms: (
                    f"max_cost_usd={budget}: the cheapest model could cost up to "
                    f"${min(_worst_cost(request, m) for m in ms):.6f} "
                    f"({min(ms, key=lambda m: _worst_cost(request, m)).name})"
                ),
            )
        )
    return constraints


def _answer_floor(request: RouteRequest) -> int:
    # A prompt that leaves no room for the expected answer does not fit, even if it squeezes in.
    return min(request.expected_output_tokens, request.max_output_tokens)


def _score(request: RouteRequest, models: Sequence[Model]) -> list[CandidateScore]:
    expected = {
        m.name: m.cost(
            prompt_tokens=request.prompt_tokens,
            completion_tokens=min(request.expected_output_tokens, _output_budget(request, m)),
        )
        for m in models
    }
    cost_rank = _log_rank({m.name: expected[m.name] for m in models})
    latency_rank = _log_rank({m.name: m.expected_latency_s for m in models})
    c = request.complexity
    return [
        CandidateScore(
            model=m.name,
            tier=m.tier,
            quality=m.quality(request.task_kind),
            expected_cost_usd=expected[m.name],
            max_cost_usd=_worst_cost(request, m),
            expected_latency_s=m.expected_latency_s,
            score=round(
                c * m.quality(request.task_kind)
                - (1 - c) * cost_rank[m.name]
                - LATENCY_WEIGHT * latency_rank[m.name],
                6,
            ),
        )
        for m in models
    ]


def _log_rank(values: dict[str, float]) -> dict[str, float]:
    logs = {name: math.log(max(value, 1e-12)) for name, value in values.items()}
    low, high = min(logs.values()), max(logs.values())
    span = high - low
    return {name: (value - low) / span if span > 0 else 0.0 for name, value in logs.items()}


def _reason(request: RouteRequest, best: CandidateScore, count: int) -> str:
    return (
        f"{best.model} ({best.tier}) scored {best.score:.3f}, best of {count} eligible for "
        f"{request.task_kind} work at complexity {request.complexity:.2f} "
        f"(quality {best.quality:.2f}, expected ${best.expected_cost_usd:.6f}, "
        f"{best.expected_latency_s} s)"
    )
