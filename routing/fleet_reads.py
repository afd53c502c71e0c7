"""What the router reads from the fleet's shared state: the live inputs of a decision.

:class:`FleetReads` is the reading half of :class:`routing.fleet.Fleet` (which writes around
each call): latency, breakers, budgets' headroom and, for model groups of several deployments,
rate-limit headroom and calls in flight, per deployment.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import redis

from routing.breaker import Breakers
from routing.budgets import Budgets
from routing.catalog import Model
from routing.constraints import LiveState
from routing.groups import grouped
from routing.inflight import InFlight
from routing.latency import LatencyBoard
from routing.limits import RateLimits
from workers.settings import Settings
from workers.tiers import Tier


class FleetReads:
    """Reads of the fleet's state for routing; :class:`routing.fleet.Fleet` builds the parts."""

    client: redis.Redis
    settings: Settings
    breakers: Breakers
    limits: RateLimits
    budgets: Budgets
    latency: LatencyBoard
    in_flight: InFlight

    def live_state(
        self,
        models: Sequence[Model],
        *,
        tenant: str,
        job_id: str,
        job_budget_usd: float | None,
        saturated: Mapping[Tier, str] | None = None,
    ) -> LiveState:
        """What the router should know about ``models`` (deployments) for a job of ``tenant``
        right now; rate-limit headroom and calls in flight only where a group has several."""
        latency = self.latency.estimates({m.deployment_id: m.expected_latency_s for m in models})
        keys = [m.deployment_id for m in models]
        closed = self.breakers.allowed_models(keys)
        opened = [key for key in keys if key not in closed]
        now = time.time()
        waits = {
            state.model: (state.opened_until or now) - now
            for state in (self.breakers.states(opened) if opened else [])
        }
        budget, label = self.headroom(tenant=tenant, job_id=job_id, job_budget_usd=job_budget_usd)
        shared = [m for group in grouped(models).values() if len(group) > 1 for m in group]
        limited = [(m.deployment_id, m.rpm, m.tpm) for m in shared if m.rpm or m.tpm]
        strategy = self.settings.deployment_strategy or "simple-shuffle"
        busy = [m.deployment_id for m in shared] if strategy == "least-busy" else []
        return LiveState(
            latency={n: e for n, e in latency.items() if e.source == "live"},
            open_breakers=waits,
            budget_usd=budget,
            budget_label=label,
            saturated=dict(saturated or {}),
            headroom=self.limits.headrooms(limited),
            in_flight=self.in_flight.counts(busy),
            strategy=strategy,
        )

    def headroom(
        self, *, tenant: str, job_id: str, job_budget_usd: float | None
    ) -> tuple[float | None, str]:
        """What the tightest budget leaves after what was spent (not what is reserved: calls in
        flight settle below their worst case), and that budget's name; (None, "") if unlimited.

        The router routes on this; :meth:`admit` still reserves against spent plus reserved.
        """
        left: list[tuple[float, str]] = []
        tenant_limit = self.settings.tenant_budget_usd(tenant)
        if tenant_limit is not None:
            spent = self.budgets.spent(tenant=tenant)
            listed = tenant in self.settings.tenant_budgets_usd or tenant_limit > 0
            label = (f"tenant {tenant} daily budget (${tenant_limit})" if listed else
                     f"tenant {tenant}'s budget (none: not in CHORDAL_TENANT_BUDGETS_USD, and "
                     "CHORDAL_DEFAULT_TENANT_BUDGET_USD unset)")  # fmt: skip
            left.append((tenant_limit - spent, label))
        if job_budget_usd is not None:
            spent = self.budgets.spent(job_id=job_id)
            left.append((job_budget_usd - spent, f"job budget (${job_budget_usd})"))
        if not left:
            return None, ""
        amount, label = min(left)
        return max(amount, 0.0), label

    def budget_pending(self, *, tenant: str, job_id: str) -> bool:
        """Whether calls in flight hold reservations that may yet be settled below them."""
        return any(
            usage.reserved_usd > 0
            for usage in (self.budgets.usage(tenant=tenant), self.budgets.usage(job_id=job_id))
        )
