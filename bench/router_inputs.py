"""The router benchmark's inputs: synthetic catalogs of any size, varied requests, live state.

Split from :mod:`bench.router` so the timing code stays readable.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from routing.catalog import Catalog, Model, read_catalog, resolve
from routing.latency import LatencyEstimate
from routing.scoring import LiveState, RouteRequest, choose
from workers.errors import ChordalError
from workers.tiers import TASK_KINDS, Tier

PROMPT_WORDS = "Summarise the quarterly report for the board and list the three main risks. "
UNUSED_URL = "http://127.0.0.1:9/v1"


def base_catalog() -> Catalog:
    """The shipped catalog, resolved for the offline profile."""
    from routing.llm import model_cost_map

    return resolve(
        read_catalog(), profile="offline", simulator_url=UNUSED_URL, model_cost=model_cost_map()
    )


def synthetic_catalog(base: Catalog, size: int, rng: random.Random) -> Catalog:
    """``size`` clones of ``base``'s models (tiers kept) with varied prices, quality, latency."""
    models: list[Model] = []
    for n in range(size):
        model = base.models[n % len(base.models)]
        name = f"{model.name}-{n:04d}"
        price = 2 ** rng.uniform(-1, 1)  # x0.5-2, log-uniform
        models.append(
            replace(
                model,
                name=name,
                litellm_params={**model.litellm_params, "model": f"openai/{name}"},
                input_cost_per_token=model.input_cost_per_token * price,
                output_cost_per_token=model.output_cost_per_token * price,
                expected_latency_s=model.expected_latency_s * 2 ** rng.uniform(-1, 1),
                quality_by_kind={
                    kind: min(1.0, max(0.0, score + rng.uniform(-0.05, 0.05)))
                    for kind, score in model.quality_by_kind.items()
                },
            )
        )
    return Catalog(models=tuple(models), profile=base.profile)


def live_state(catalog: Catalog, rng: random.Random) -> LiveState:
    """Measured latency for every other model and a few open breakers."""
    latency = {}
    for model in catalog.models[::2]:
        p50 = model.expected_latency_s * rng.uniform(0.6, 1.5)
        latency[model.name] = LatencyEstimate(p50=p50, p95=p50 * 1.8, samples=50, source="live")
    opened = rng.sample([m.name for m in catalog.models], min(3, len(catalog.models) // 10))
    return LiveState(latency=latency, open_breakers={name: rng.uniform(1, 30) for name in opened})


def route_requests(catalog: Catalog, rng: random.Random, count: int = 120) -> list[RouteRequest]:
    """A varied mix of requests (120: every combination of the limits below once)."""
    plain = live_state(catalog, rng)
    requests: list[RouteRequest] = []
    for n in range(count):
        limits: dict[str, Any] = {}
        if n % 4 == 1:
            limits["max_cost_usd"] = 0.01
        if n % 4 == 2:
            limits["max_latency_s"] = 8.0
        if n % 6 == 3:
            limits["min_quality"] = 0.7
        if n % 8 == 7:
            limits["tier"] = list(Tier)[n % 3]
        live = replace(
            plain,
            budget_usd=0.02 if n % 3 == 0 else None,
            budget_label="tenant bench daily budget ($5)",
            saturated={Tier.PREMIUM: "queue depth 900 > 500"} if n % 5 == 0 else {},
        )
        requests.append(
            RouteRequest(
                prompt_tokens=rng.choice((120, 500, 2_000, 8_000)),
                max_output_tokens=rng.choice((1_024, 4_096)),
                expected_output_tokens=rng.randint(200, 800),
                task_kind=TASK_KINDS[n % len(TASK_KINDS)],
                complexity=rng.random(),
                live=live,
                **limits,
            )
        )
    return requests


def decides(request: RouteRequest, catalog: Catalog) -> bool:
    """One decision; False when no model may serve ``request`` (that is a decision too)."""
    try:
        choose(request, catalog)
    except ChordalError:
        return False
    return True


def prompt_messages() -> list[dict[str, str]]:
    """A system and user message of about 500 tokens in all."""
    return [
        {"role": "system", "content": "You are a careful analyst."},
        {"role": "user", "content": PROMPT_WORDS * 30},
    ]
