"""Choosing a deployment for a job: hard constraints first, then a weighted score.

The score trades quality against cost by the job's complexity ``c`` (0-1)::

    score = c * quality - (1 - c) * cost_rank - LATENCY_WEIGHT * latency_rank

``cost_rank`` and ``latency_rank`` place each candidate between the cheapest/fastest (0) and the
dearest/slowest (1) eligible candidate, on a log scale because prices span three orders of
magnitude. A free model (the local tier's) ranks with the cheapest priced one: it then wins
cheap work where its quality or latency beats that model's, and leaves the priced models'
ranks as they were. A simple job therefore goes to the cheapest adequate model; a complex one
to the strongest it may afford.

:class:`~routing.constraints.LiveState` brings what the fleet knows right now: measured
p50/p95 latency per deployment (p50 scores, p95 checks ``max_latency_s``), deployments whose
circuit breaker is open, what the tenant's and job's budgets still allow, and tiers whose queues
are saturated. The hard constraints (:mod:`routing.constraints`) apply to every deployment;
what is left is scored by model group (:mod:`routing.groups`: a group's cheapest eligible
deployment, latency blended over them), and the chosen group's deployment is then picked by
weight or by calls in flight. A failed call's group keeps the job while it has another eligible
deployment (``RouteRequest.prefer``): the job fails over within the group before it moves on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from routing.catalog import Catalog, Model
from routing.constraints import (
    NO_LIVE_STATE,
    LiveState,
    RouteRequest,
    WorstCosts,
    eligible,
    known_quality_needed,
    output_budget,
)
from routing.decision import CandidateScore, RoutingDecision
from routing.groups import Face, faces, has_room, pick
from workers.errors import ChordalError

__all__ = [
    "CANDIDATES_KEPT", "LATENCY_WEIGHT", "NO_LIVE_STATE", "LiveState", "RouteRequest",
    "cheapest_worst_case", "choose",
]  # fmt: skip

LATENCY_WEIGHT = 0.15
CANDIDATES_KEPT = 5


def choose(request: RouteRequest, catalog: Catalog) -> RoutingDecision:
    """The best model group for ``request`` and the deployment of it to call; raises
    NoEligibleModel naming the constraint, CircuitOpen when only open breakers stand in the
    way, BudgetExceeded when the budget does."""
    worst = WorstCosts(request)
    ranked = _rank(request, eligible(request, catalog.models, worst), worst)
    notes: list[str] = []
    best = _within(request, ranked, notes) or _spill(request, ranked, notes)
    if request.live.budget_usd is not None:
        notes.extend(_downgrade(request, catalog, best, worst))
    skipped = sorted(set(request.live.open_breakers) - request.exclude)
    if skipped:
        notes.append(f"skipped (circuit breaker open): {', '.join(skipped)}")
    if why := known_quality_needed(request):
        unknown = sorted({m.name for m in catalog.models if not m.quality_known} - request.exclude)
        notes += [f"left out (quality unknown; {why}): {', '.join(unknown)}"] if unknown else []
    deployment = _deployment(request, best.face, catalog, notes)
    kept = [_candidate(request, r, worst) for r in ranked[:CANDIDATES_KEPT]]
    chosen = _candidate(request, best, worst)
    return RoutingDecision(
        model=chosen.model,
        deployment=deployment.deployment_id,
        tier=deployment.tier,
        task_kind=request.task_kind,
        complexity=request.complexity,
        prompt_tokens=request.prompt_tokens,
        max_output_tokens=output_budget(request, deployment),
        expected_cost_usd=_expected_cost(request, deployment),
        max_cost_usd=worst.of(deployment),
        reason=_reason(request, chosen, len(ranked)),
        excluded=sorted(request.exclude),
        candidates=kept,
        notes=notes,
    )


@dataclass(frozen=True)
class _Ranked:
    # A scored group as plain numbers; only the few kept become CandidateScore models.
    score: float
    face: Face
    expected_cost_usd: float

    @property
    def model(self) -> Model:
        return self.face.model


def _within(request: RouteRequest, ranked: list[_Ranked], notes: list[str]) -> _Ranked | None:
    # A call of this group failed on one deployment: another deployment of the same model is
    # tried before any other model (LiteLLM's order: the group's deployments, then fallbacks).
    for candidate in ranked:
        if candidate.model.name == request.prefer:
            notes.append(f"failed over within {request.prefer}")
            return candidate
    return None


def _deployment(request: RouteRequest, face: Face, catalog: Catalog, notes: list[str]) -> Model:
    # The group's deployment to call: one whose rate limit has room, by the fleet's strategy.
    live = request.live
    full = {
        d.deployment_id
        for d in face.deployments
        if not has_room(live.headroom.get(d.deployment_id), tokens=_limit_tokens(request, d))
    }
    chosen = pick(face.deployments, strategy=live.strategy, full=full, in_flight=live.in_flight)
    group = len(catalog.deployments_of(face.model.name))
    if group > 1:
        how = f"{live.strategy} over {len(face.deployments)} of {group} deployments"
        if full:
            how += f"; rate limit full: {', '.join(sorted(full))}"
        notes.append(f"deployment {chosen.deployment_id} of {face.model.name} ({how})")
    return chosen


def _limit_tokens(request: RouteRequest, model: Model) -> int:
    # What admission reserves in the deployment's token limit (routing.fleet): capped at it.
    tokens = request.prompt_tokens + output_budget(request, model)
    return min(tokens, model.tpm) if model.tpm else tokens


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
    request: RouteRequest, catalog: Catalog, best: _Ranked, worst: WorstCosts
) -> list[str]:
    # Say so when the budget, and nothing else, kept the job off a model it would have chosen.
    try:
        free = _rank(request, eligible(request, catalog.models, worst, skip="budget"), worst)[0]
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
    worst = WorstCosts(request)
    return min(worst.of(model) for model in eligible(request, catalog.models, worst))


def _expected_cost(request: RouteRequest, m: Model) -> float:
    out = min(request.expected_output_tokens, request.max_output_tokens, m.max_output_tokens)
    return request.prompt_tokens * m.input_cost_per_token + out * m.output_cost_per_token


def _rank(request: RouteRequest, models: Sequence[Model], worst: WorstCosts) -> list[_Ranked]:
    """Every eligible group scored, best first (plain numbers: this runs for every job)."""
    costs = {m.deployment_id: _expected_cost(request, m) for m in models}
    live = request.live
    groups = faces(models, cost=lambda m: costs[m.deployment_id], p50=live.p50, live=live.measured)
    expected = [costs[face.model.deployment_id] for face in groups]
    cost_rank = _log_ranks(expected)
    latency_rank = _log_ranks([face.p50 for face in groups])
    c, kind = request.complexity, request.task_kind
    ranked = [
        _Ranked(
            score=round(
                c * face.model.quality(kind)
                - (1 - c) * cost_rank[i]
                - LATENCY_WEIGHT * latency_rank[i],
                6,
            ),
            face=face,
            expected_cost_usd=expected[i],
        )
        for i, face in enumerate(groups)
    ]
    ranked.sort(key=lambda r: r.score, reverse=True)
    return ranked


def _candidate(request: RouteRequest, ranked: _Ranked, worst: WorstCosts) -> CandidateScore:
    face = ranked.face
    m = face.model
    return CandidateScore(
        model=m.name,
        tier=m.tier,
        quality=m.quality(request.task_kind),
        expected_cost_usd=ranked.expected_cost_usd,
        max_cost_usd=worst.of(m),
        expected_latency_s=round(face.p50, 4),
        latency_source="live" if face.live else "catalog",
        score=ranked.score,
        quality_source=m.quality_source,
        tier_source=m.tier_source,
        deployments=len(face.deployments),
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
