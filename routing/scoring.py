"""Choosing a deployment for a job: hard constraints first, then a weighted score.

The score trades quality against cost by the job's complexity ``c`` (0-1)::

    score = c * quality - (1 - c) * cost_rank - LATENCY_WEIGHT * latency_rank

``cost_rank`` and ``latency_rank`` place each candidate between the cheapest/fastest (0) and the
dearest/slowest (1) eligible candidate, on a log scale because prices span three orders of
magnitude. A free model (the local tier's) ranks with the cheapest priced one: it then wins
cheap work where its quality or latency beats that model's, and leaves the priced models'
ranks as they were. A simple job therefore goes to the cheapest adequate model; a complex one
to the strongest it may afford.

:class:`LiveState` brings what the fleet knows right now: measured p50/p95 latency per model
(p50 scores, p95 checks ``max_latency_s``), models whose circuit breaker is open, what the
tenant's and job's budgets still allow, and tiers whose queues are saturated. A constraint that
leaves nothing raises the error the caller can act on: NoEligibleModel (fix the job),
CircuitOpen (retry later) or BudgetExceeded (a limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from routing.catalog import Catalog, Model
from routing.decision import CandidateScore, RoutingDecision
from routing.latency import LatencyEstimate
from workers.errors import BudgetExceeded, ChordalError, CircuitOpen, NoEligibleModel
from workers.tiers import TaskKind, Tier

LATENCY_WEIGHT = 0.15
CANDIDATES_KEPT = 5
HIGH_COMPLEXITY = 0.85  # a job's "high" (agents/job.py): unknown quality is left out from it on


@dataclass(frozen=True)
class LiveState:
    """What the fleet knows right now, read from Redis and the broker by the router."""

    latency: Mapping[str, LatencyEstimate] = field(default_factory=dict)
    # Models whose breaker is open, with the seconds until each may take a probe call.
    open_breakers: Mapping[str, float] = field(default_factory=dict)
    budget_usd: float | None = None
    budget_label: str = "budget"
    saturated: Mapping[Tier, str] = field(default_factory=dict)

    def p50(self, model: Model) -> float:
        """The model's median latency: measured, else the catalog's."""
        live = self.latency.get(model.name)
        return live.p50 if live else model.expected_latency_s

    def p95(self, model: Model) -> float:
        """The model's 95th-percentile latency: measured, else the catalog's."""
        live = self.latency.get(model.name)
        return live.p95 if live else model.expected_latency_s


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
    exclude: frozenset[str] = field(default_factory=frozenset)
    live: LiveState = NO_LIVE_STATE


@dataclass(frozen=True)
class _Constraint:
    field: str
    keeps: Callable[[Model], bool]
    explain: Callable[[Sequence[Model]], str]
    error: Callable[[str, str], ChordalError] = NoEligibleModel


def choose(request: RouteRequest, catalog: Catalog) -> RoutingDecision:
    """The best deployment for ``request``; raises NoEligibleModel naming the constraint,
    CircuitOpen when only open breakers stand in the way, BudgetExceeded when the budget does."""
    worst = _WorstCosts(request)
    remaining = _eligible(request, catalog.models, worst)
    ranked = _rank(request, remaining, worst)
    notes: list[str] = []
    best = _spill(request, ranked, notes)
    if request.live.budget_usd is not None:
        notes.extend(_downgrade(request, catalog, best, worst))
    skipped = sorted(set(request.live.open_breakers) - request.exclude)
    if skipped:
        notes.append(f"skipped (circuit breaker open): {', '.join(skipped)}")
    if why := _known_quality_needed(request):
        unknown = sorted({m.name for m in catalog.models if not m.quality_known} - request.exclude)
        notes += [f"left out (quality unknown; {why}): {', '.join(unknown)}"] if unknown else []
    kept = [_candidate(request, r, worst) for r in ranked[:CANDIDATES_KEPT]]
    chosen = _candidate(request, best, worst)
    return RoutingDecision(
        model=chosen.model,
        tier=chosen.tier,
        task_kind=request.task_kind,
        complexity=request.complexity,
        prompt_tokens=request.prompt_tokens,
        max_output_tokens=_output_budget(request, best.model),
        expected_cost_usd=chosen.expected_cost_usd,
        max_cost_usd=chosen.max_cost_usd,
        reason=_reason(request, chosen, len(ranked)),
        excluded=sorted(request.exclude),
        candidates=kept,
        notes=notes,
    )


@dataclass(frozen=True)
class _Ranked:
    # A scored candidate as plain numbers; only the few kept become CandidateScore models.
    score: float
    model: Model
    expected_cost_usd: float


class _WorstCosts(dict[str, float]):
    """Each model's worst-case cost for one request, computed once."""

    def __init__(self, request: RouteRequest) -> None:
        super().__init__()
        self.request = request

    def of(self, model: Model) -> float:
        cost = self.get(model.name)
        if cost is None:
            cost = self[model.name] = _worst_cost(self.request, model)
        return cost


def _spill(request: RouteRequest, ranked: list[_Ranked], notes: list[str]) -> _Ranked:
    # An unpinned job whose best tier is saturated goes to the best candidate of another tier.
    best = ranked[0]
    why = request.live.saturated.get(best.model.tier)
    if request.tier is not None or why is None:
        return best
    for candidate in ranked[1:]:
        if candidate.model.tier not in request.live.saturated:
            notes.append(
                f"spilled from {best.model.name} ({best.model.tier}: {why}) "
                f"to {candidate.model.tier}"
            )
            return candidate
    return best


def _downgrade(
    request: RouteRequest, catalog: Catalog, best: _Ranked, worst: _WorstCosts
) -> list[str]:
    # Say so when the budget, and nothing else, kept the job off a model it would have chosen.
    try:
        free = _rank(request, _eligible(request, catalog.models, worst, skip="budget"), worst)[0]
    except ChordalError:
        return []
    if free.model.name == best.model.name:
        return []
    return [
        f"downgraded from {free.model.name} ({free.model.tier}): the "
        f"{request.live.budget_label} allows ${request.live.budget_usd:.6f}, "
        f"{free.model.name} could cost up to ${worst.of(free.model):.6f}"
    ]


def cheapest_worst_case(request: RouteRequest, catalog: Catalog) -> float:
    """The least any eligible deployment could cost for ``request`` (prompt plus max output).

    This is what a budget must hold for the request to run at all; raises NoEligibleModel.
    """
    worst = _WorstCosts(request)
    return min(worst.of(model) for model in _eligible(request, catalog.models, worst))


def _eligible(
    request: RouteRequest, models: Sequence[Model], worst: _WorstCosts, *, skip: str = ""
) -> Sequence[Model]:
    remaining = models
    for constraint in _constraints(request, worst):
        if constraint.field == skip:
            continue
        kept = [model for model in remaining if constraint.keeps(model)]
        if not kept:
            raise constraint.error(constraint.explain(remaining), constraint.field)
        remaining = kept
    return remaining


def _worst_cost(request: RouteRequest, model: Model) -> float:
    return model.cost(
        prompt_tokens=request.prompt_tokens,
        completion_tokens=_output_budget(request, model),
    )


def _output_budget(request: RouteRequest, model: Model) -> int:
    return min(request.max_output_tokens, model.max_output_tokens)


def _constraints(request: RouteRequest, worst: _WorstCosts) -> list[_Constraint]:
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
    if why := _known_quality_needed(request):
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
        constraints.append(
            _Constraint(
                "breaker",
                lambda m: m.name not in live.open_breakers,
                lambda ms: (
                    "every eligible model's circuit breaker is open: "
                    + ", ".join(
                        f"{m.name} (retry in {live.open_breakers[m.name]:.1f} s)" for m in ms
                    )
                ),
                lambda message, _field: CircuitOpen(message, _soonest(live)),
            )
        )
    return constraints


def _known_quality_needed(request: RouteRequest) -> str | None:
    # Why the job may go only to models whose quality is known (an unknown one's 0 is a
    # placeholder, not a measurement), or None.
    if request.min_quality is not None:
        return f"the job has min_quality={request.min_quality}"
    if request.complexity >= HIGH_COMPLEXITY:
        return f"the job's complexity {request.complexity:.2f} is high"
    return None


def _soonest(live: LiveState) -> float | None:
    # When every candidate is open, the job may wait for the first breaker to half-open.
    finite = [wait for wait in live.open_breakers.values() if math.isfinite(wait)]
    return max(0.0, min(finite)) if finite else None


def _answer_floor(request: RouteRequest) -> int:
    # A prompt that leaves no room for the expected answer does not fit, even if it squeezes in.
    return min(request.expected_output_tokens, request.max_output_tokens)


def _rank(request: RouteRequest, models: Sequence[Model], worst: _WorstCosts) -> list[_Ranked]:
    """Every candidate scored, best first (plain numbers: this runs for every job)."""
    prompt, expected_out = request.prompt_tokens, request.expected_output_tokens
    cap = request.max_output_tokens
    expected = [
        prompt * m.input_cost_per_token
        + min(expected_out, cap, m.max_output_tokens) * m.output_cost_per_token
        for m in models
    ]
    p50 = request.live.p50
    cost_rank = _log_ranks(expected)
    latency_rank = _log_ranks([p50(m) for m in models])
    c, kind = request.complexity, request.task_kind
    ranked = [
        _Ranked(
            score=round(
                c * m.quality(kind) - (1 - c) * cost_rank[i] - LATENCY_WEIGHT * latency_rank[i], 6
            ),
            model=m,
            expected_cost_usd=expected[i],
        )
        for i, m in enumerate(models)
    ]
    ranked.sort(key=lambda r: r.score, reverse=True)
    return ranked


def _candidate(request: RouteRequest, ranked: _Ranked, worst: _WorstCosts) -> CandidateScore:
    m = ranked.model
    return CandidateScore(
        model=m.name,
        tier=m.tier,
        quality=m.quality(request.task_kind),
        expected_cost_usd=ranked.expected_cost_usd,
        max_cost_usd=worst.of(m),
        expected_latency_s=round(request.live.p50(m), 4),
        latency_source="live" if m.name in request.live.latency else "catalog",
        score=ranked.score,
        quality_source=m.quality_source,
        tier_source=m.tier_source,
    )


def _log_ranks(values: list[float]) -> list[float]:
    # Zero (a free local model's cost) has no place on a log scale. It ranks with the smallest
    # positive value: any floor below that would stretch the scale by as many decades as it
    # chose, and squeeze the differences between every priced model towards nothing.
    floor = min((value for value in values if value > 0), default=1.0)
    logs = [math.log(max(value, floor)) for value in values]
    low, high = min(logs), max(logs)
    span = high - low
    return [(value - low) / span if span > 0 else 0.0 for value in logs]


def _reason(request: RouteRequest, best: CandidateScore, count: int) -> str:
    return (
        f"{best.model} ({best.tier}) scored {best.score:.3f}, best of {count} eligible for "
        f"{request.task_kind} work at complexity {request.complexity:.2f} "
        f"(quality {best.quality:.2f}, expected ${best.expected_cost_usd:.6f}, "
        f"{best.expected_latency_s} s)"
    )
