"""Routing an agent job as plain functions: the process's runtime, and the plan (which model).

Celery tasks in :mod:`agents.tasks` are thin wrappers over these; the call itself is in
:mod:`agents.calls`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import Any

from agents.job import Job
from agents.registry import AgentRegistry
from agents.spec import AgentSpec
from routing.catalog import Catalog, catalog_for
from routing.complexity import estimate_complexity
from routing.decision import RoutingDecision
from routing.fleet import Fleet
from routing.groups import keyed
from routing.llm import count_prompt_tokens, model_cost_map
from routing.scoring import NO_LIVE_STATE, LiveState, RouteRequest, cheapest_worst_case, choose
from workers.errors import CircuitOpen, NoEligibleModel
from workers.queues import CachedQueueReader
from workers.settings import Settings, get_settings
from workers.tiers import QUALITY_TIERS, Tier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """What a worker process needs to route and run jobs, built once per process."""

    settings: Settings
    catalog: Catalog
    agents: AgentRegistry
    fleet: Fleet

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Read the catalog (priced by LiteLLM) and the agent registry; connect the fleet state
        lazily (nothing touches Redis until a job is routed)."""
        # A model with one deployment is keyed by its name (routing.groups.keyed).
        catalog = keyed(catalog_for(settings, model_cost=model_cost_map()))
        # The pick within a group: the setting, else the config's routing_strategy, else by weight.
        strategy = settings.deployment_strategy or catalog.deployment_pick or "simple-shuffle"
        settings = settings.model_copy(update={"deployment_strategy": strategy})
        agents = AgentRegistry.load(settings.agents_path)
        return cls(settings=settings, catalog=catalog, agents=agents, fleet=Fleet.connect(settings))

    @cached_property
    def queues(self) -> CachedQueueReader:
        """The tier queues' depths, read from the broker at most every ``route_cache_s``."""
        return CachedQueueReader(
            self.settings.broker_url or "",
            [tier.queue for tier in Tier],
            ttl_s=max(self.settings.route_cache_s, 0.1),
        )


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    """This process's runtime, from the environment's settings."""
    return Runtime.load(get_settings())


def build_messages(spec: AgentSpec, job: Job) -> list[dict[str, Any]]:
    """The chat messages sent for ``job``."""
    return [
        {"role": "system", "content": spec.system_prompt},
        {"role": "user", "content": job.input},
    ]


def plan(
    job: Job,
    runtime: Runtime,
    *,
    exclude: frozenset[str] = frozenset(),
    live: LiveState = NO_LIVE_STATE,
    fallback: bool = False,
    prefer: str | None = None,
) -> RoutingDecision:
    """Choose a deployment for ``job``; raises UnknownAgent, NoEligibleModel, CircuitOpen or
    BudgetExceeded. With ``fallback``, a tier-pinned job may move to the tiers the
    ``fallback_tiers`` setting allows when its own has nothing left. ``prefer`` names the
    model group to stay in while it has an eligible deployment (a failover)."""
    request = route_request(job, runtime, exclude=exclude, live=live)
    request = replace(request, prefer=prefer)
    decision = _choose_in_tiers(request, runtime, fallback=fallback)
    if job.cascade is None:
        return decision
    return _with_cascade(request, decision, runtime)


def _choose_in_tiers(request: RouteRequest, runtime: Runtime, *, fallback: bool) -> RoutingDecision:
    try:
        return choose(request, runtime.catalog)
    except (NoEligibleModel, CircuitOpen) as first:
        if not fallback or request.tier is None:
            raise
        for tier in fallback_tiers(request.tier, runtime.settings.fallback_tiers):
            try:
                decision = choose(replace(request, tier=tier), runtime.catalog)
            except (NoEligibleModel, CircuitOpen):
                continue
            decision.notes.append(f"fell back from tier {request.tier} to {tier}: {first}")
            return decision
        raise


def fallback_tiers(pinned: Tier, policy: str) -> list[Tier]:
    """The tiers a job pinned to ``pinned`` may fall back to, nearest first.

    The local tier is outside the order, both ways: a job is pinned there for where its data
    goes, so it never moves to a provider, and a job pinned to a provider's tier never lands on
    a model far weaker than any provider's.
    """
    if pinned not in QUALITY_TIERS:
        return []
    at = QUALITY_TIERS.index(pinned)
    down, up = list(QUALITY_TIERS[:at][::-1]), list(QUALITY_TIERS[at + 1 :])
    return {"down": down, "up": up, "any": [*down, *up]}.get(policy, [])


def _with_cascade(
    request: RouteRequest, decision: RoutingDecision, runtime: Runtime
) -> RoutingDecision:
    # FrugalGPT: start on the cheapest adequate model, keep the strongest one to escalate to.
    cheap = choose(replace(request, complexity=0.0), runtime.catalog)
    strong = choose(replace(request, complexity=1.0), runtime.catalog)
    if cheap.model == strong.model:
        return decision
    cheap.notes.append(f"cascade: {cheap.model} first, {strong.model} if its answer fails")
    return cheap.model_copy(update={"cascade": [strong.model]})


def escalation(job: Job, decision: RoutingDecision, runtime: Runtime) -> RoutingDecision:
    """The decision for a cascade's next, stronger model."""
    request = route_request(job, runtime)
    others = frozenset(m.name for m in runtime.catalog.models if m.name not in decision.cascade)
    strong = choose(replace(request, complexity=1.0, exclude=others), runtime.catalog)
    strong.notes.append(f"escalated from {decision.model}")
    return strong


def cheapest_cost(job: Job, runtime: Runtime) -> float:
    """The least ``job`` could cost on any eligible model, at its worst case."""
    return cheapest_worst_case(route_request(job, runtime), runtime.catalog)


def route_request(
    job: Job,
    runtime: Runtime,
    *,
    exclude: frozenset[str] = frozenset(),
    live: LiveState = NO_LIVE_STATE,
) -> RouteRequest:
    """What the router needs to know about ``job``: its tokens, kind and constraints."""
    spec = runtime.agents.get(job.target)
    if isinstance(job.complexity, float):
        complexity = job.complexity
    elif job.complexity is None:
        complexity = spec.default_complexity
    else:  # auto, or classify before the classifier answered
        complexity = estimate_complexity(job.input)
    return RouteRequest(
        prompt_tokens=count_prompt_tokens(build_messages(spec, job)),
        max_output_tokens=spec.max_output_tokens,
        expected_output_tokens=spec.expected_output_tokens,
        task_kind=spec.task_kind,
        complexity=complexity,
        tier=job.tier,
        max_cost_usd=job.max_cost_usd,
        max_latency_s=job.max_latency_s,
        min_quality=job.min_quality,
        exclude=exclude,
        live=live,
    )


def live_plan(
    job: Job,
    runtime: Runtime,
    *,
    budget_id: str,
    exclude: frozenset[str] = frozenset(),
    fallback: bool = False,
    prefer: str | None = None,
) -> RoutingDecision:
    """:func:`plan` with what the fleet knows now: latency, breakers, budgets, queues."""
    live = runtime.fleet.live_state(
        runtime.catalog.models,
        tenant=job.tenant,
        job_id=budget_id,
        job_budget_usd=job.max_cost_usd,
        saturated=saturated_tiers(runtime),
    )
    return plan(job, runtime, exclude=exclude, live=live, fallback=fallback, prefer=prefer)


def saturated_tiers(runtime: Runtime) -> dict[Tier, str]:
    """Tiers whose queue is deeper than ``spill_depth``; empty if the broker cannot say."""
    try:
        states = runtime.queues.states()
    except Exception:  # the queue reading is advice; routing goes on without it
        logger.warning("cannot read queue depths; not spilling", exc_info=True)
        return {}
    limit = runtime.settings.spill_depth
    return {
        tier: f"queue depth {states[tier.queue].depth}"
        for tier in Tier
        if tier.queue in states and states[tier.queue].depth > limit
    }
