"""Running an agent job as plain functions: plan (route) and execute (call the model).

Celery tasks in :mod:`agents.tasks` are thin wrappers over these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from agents.job import Job
from agents.registry import AgentRegistry
from agents.spec import AgentSpec
from routing.catalog import Catalog, read_catalog, resolve
from routing.decision import RoutingDecision
from routing.llm import Completion, complete, count_prompt_tokens, model_cost_map
from routing.scoring import RouteRequest, cheapest_worst_case, choose
from workers.settings import Settings, get_settings


@dataclass(frozen=True)
class Runtime:
    """What a worker process needs to route and run jobs, built once per process."""

    settings: Settings
    catalog: Catalog
    agents: AgentRegistry

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Read the catalog (priced by LiteLLM) and the agent registry."""
        catalog = resolve(
            read_catalog(settings.catalog_path),
            profile=settings.resolved_profile,
            simulator_url=settings.simulator_url,
            model_cost=model_cost_map(),
        )
        return cls(
            settings=settings, catalog=catalog, agents=AgentRegistry.load(settings.agents_path)
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


def plan(job: Job, runtime: Runtime, *, exclude: frozenset[str] = frozenset()) -> RoutingDecision:
    """Choose a deployment for ``job``; raises UnknownAgent or NoEligibleModel."""
    return choose(route_request(job, runtime, exclude=exclude), runtime.catalog)


def cheapest_cost(job: Job, runtime: Runtime) -> float:
    """The least ``job`` could cost on any eligible model, at its worst case."""
    return cheapest_worst_case(route_request(job, runtime), runtime.catalog)


def route_request(
    job: Job, runtime: Runtime, *, exclude: frozenset[str] = frozenset()
) -> RouteRequest:
    """What the router needs to know about ``job``: its tokens, kind and constraints."""
    spec = runtime.agents.get(job.target)
    return RouteRequest(
        prompt_tokens=count_prompt_tokens(build_messages(spec, job)),
        max_output_tokens=spec.max_output_tokens,
        expected_output_tokens=spec.expected_output_tokens,
        task_kind=spec.task_kind,
        complexity=job.complexity if job.complexity is not None else spec.default_complexity,
        tier=job.tier,
        max_cost_usd=job.max_cost_usd,
        max_latency_s=job.max_latency_s,
        min_quality=job.min_quality,
        exclude=exclude,
    )


@dataclass(frozen=True)
class Outcome:
    """A successful call and its validated structured answer."""

    completion: Completion
    structured: dict[str, Any] | None


async def execute(job: Job, *, job_id: str, decision: RoutingDecision, runtime: Runtime) -> Outcome:
    """Call the decided model for ``job``; raises RetryLater, InvalidOutput or AgentFailed."""
    spec = runtime.agents.get(job.target)
    model = runtime.catalog.get(decision.model)
    limits = [runtime.settings.llm_timeout_s, job.max_latency_s, job.seconds_left(time.time())]
    timeout = max(0.001, min(limit for limit in limits if limit is not None))
    completion = await complete(
        model,
        build_messages(spec, job),
        max_tokens=decision.max_output_tokens,
        timeout=timeout,
        response_format=spec.response_format(),
        headers={"X-Chordal-Job": job_id},
    )
    return Outcome(completion=completion, structured=spec.parse_output(completion.content))
