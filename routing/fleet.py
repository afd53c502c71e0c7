"""The routing state every worker shares through Redis, and the admission of each LLM call.

:class:`Fleet` bundles the shared pieces -- circuit breakers (:mod:`routing.breaker`), rate
limits (:mod:`routing.limits`), budgets (:mod:`routing.budgets`) and live latency
(:mod:`routing.latency`) -- built from the one settings object.

Every call goes through three steps, in the worker thread that runs the task (the Redis calls
are synchronous; the event loop only carries HTTP):

1. :meth:`Fleet.admit` reserves the call's worst-case cost in the tenant's and the job's
   budgets, takes a slot in the deployment's fleet-wide RPM/TPM limits, and asks its breaker.
   The breaker comes last so a half-open probe lease is never taken by a call that a budget or
   a limit then refuses. A refusal undoes what was taken and raises BudgetExceeded,
   RateLimited or CircuitOpen, carrying ``retry_after``.
2. The call.
3. :meth:`Fleet.succeeded` or :meth:`Fleet.failed` records the outcome on the breaker, the
   latency board and the limits (tokens reconciled with the provider's ``usage``, its
   ``Retry-After`` and ``x-ratelimit-*`` headers respected), and settles or refunds the
   budgets with the call's real cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from routing.breaker import BreakerPolicy, Breakers
from routing.budgets import Budgets, Reservation
from routing.catalog import Model
from routing.latency import LatencyBoard
from routing.ledger import Ledger
from routing.limits import Grant, RateLimits
from routing.scoring import LiveState
from workers.errors import (
    ChordalError,
    CircuitOpen,
    ConfigurationError,
    ProviderTimeout,
    RateLimited,
    RetryLater,
)
from workers.settings import Settings
from workers.tiers import Tier

# A Redis that does not answer must fail a routing step quickly, not hang a worker slot.
SOCKET_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Admission:
    """What :meth:`Fleet.admit` took for one call, to be given back or settled after it."""

    model: str
    reservation: Reservation
    grant: Grant | None
    probe_token: str | None
    tenant: str = "default"
    agent: str = ""
    tier: str = ""


class Fleet:
    """Breakers, limits, budgets and latency, shared by every worker through one Redis."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.breakers = Breakers(client, breaker_policy(settings))
        self.limits = RateLimits(client, window=settings.rate_window_s)
        self.budgets = Budgets(client, reservation_ttl=settings.budget_reservation_ttl_s)
        self.ledger = Ledger(client, retention_days=settings.ledger_retention_days)
        self.latency = LatencyBoard(
            client,
            window=settings.latency_window,
            min_samples=min(settings.latency_min_samples, settings.latency_window),
            max_age_s=settings.latency_max_age_s,
            cache_s=settings.route_cache_s,
        )

    @classmethod
    def connect(cls, settings: Settings) -> Fleet:
        """The fleet state in the result backend's Redis."""
        url = settings.backend_url
        if url is None:
            raise ConfigurationError(
                "set CHORDAL_RESULT_BACKEND (a Redis URL): routing state lives there"
            )
        # One pool per process, sized for every thread at once, that waits for a free
        # connection instead of raising (redis-py's default pool raises past 100).
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size(settings),
            timeout=SOCKET_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
        )
        client = redis.Redis(connection_pool=pool)
        return cls(client, settings)

    def close(self) -> None:
        """Close the connections to Redis."""
        self.client.close()
        self.client.connection_pool.disconnect()

    def live_state(
        self,
        models: Sequence[Model],
        *,
        tenant: str,
        job_id: str,
        job_budget_usd: float | None,
        saturated: Mapping[Tier, str] | None = None,
    ) -> LiveState:
        """What the router should know about ``models`` for a job of ``tenant`` right now."""
        latency = self.latency.estimates({m.name: m.expected_latency_s for m in models})
        names = [m.name for m in models]
        closed = self.breakers.allowed_models(names)
        opened = [name for name in names if name not in closed]
        now = time.time()
        waits = {
            state.model: (state.opened_until or now) - now
            for state in (self.breakers.states(opened) if opened else [])
        }
        budget, label = self.headroom(tenant=tenant, job_id=job_id, job_budget_usd=job_budget_usd)
        return LiveState(
            latency={n: e for n, e in latency.items() if e.source == "live"},
            open_breakers=waits,
            budget_usd=budget,
            budget_label=label,
            saturated=dict(saturated or {}),
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
            left.append((tenant_limit - spent, f"tenant {tenant} daily budget (${tenant_limit})"))
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

    def admit(
        self,
        model: Model,
        *,
        tenant: str,
        job_id: str,
        agent: str = "",
        prompt_tokens: int,
        max_tokens: int,
        job_budget_usd: float | None,
    ) -> Admission:
        """Take what a call to ``model`` needs; raises BudgetExceeded, RateLimited or
        CircuitOpen (the last two carry ``retry_after``)."""
        reservation = self.budgets.reserve(
            tenant=tenant,
            job_id=job_id,
            amount_usd=model.cost(prompt_tokens=prompt_tokens, completion_tokens=max_tokens),
            tenant_limit_usd=self.settings.tenant_budget_usd(tenant),
            job_limit_usd=job_budget_usd,
        )
        grant = None
        try:
            if model.rpm is not None or model.tpm is not None:
                tokens = prompt_tokens + max_tokens
                grant = self.limits.acquire(
                    model.name,
                    rpm=model.rpm,
                    tpm=model.tpm,
                    tokens=min(tokens, model.tpm) if model.tpm else tokens,
                )
                grant.raise_if_refused()
            permit = self.breakers.allow(model.name)
            if not permit.allowed:
                wait = (permit.retry_at or time.time()) - time.time()
                msg = f"{model.name}: circuit breaker {permit.state.replace('_', '-')}"
                raise CircuitOpen(msg, max(0.0, wait) if math.isfinite(wait) else None)
        except ChordalError:
            if grant is not None and grant.granted:
                self.limits.release(grant)
            self.budgets.refund(reservation)
            raise
        return Admission(
            model=model.name,
            reservation=reservation,
            grant=grant,
            probe_token=permit.probe_token,
            tenant=tenant,
            agent=agent,
            tier=str(model.tier),
        )

    def succeeded(
        self,
        admission: Admission,
        *,
        latency_s: float,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Record a call that answered: breaker, latency, real tokens and cost."""
        name = admission.model
        self.breakers.record(name, ok=True, latency_s=latency_s, probe_token=admission.probe_token)
        self.latency.record(name, latency_s)
        if admission.grant is not None:
            self.limits.reconcile(admission.grant, actual_tokens=tokens_in + tokens_out)
        if headers:
            self.limits.note_headers(name, headers)
        self.budgets.settle(admission.reservation, actual_usd=cost_usd)
        self._book(admission, ok=True, tokens=(tokens_in, tokens_out), cost_usd=cost_usd,
                   latency_s=latency_s)  # fmt: skip

    def failed(
        self,
        admission: Admission,
        error: BaseException,
        *,
        latency_s: float,
        cost_usd: float = 0.0,
    ) -> None:
        """Record a call that failed; only retryable errors count against the breaker."""
        name = admission.model
        self.breakers.record(
            name,
            ok=False,
            latency_s=latency_s,
            retryable=isinstance(error, RetryLater),
            probe_token=admission.probe_token,
        )
        if isinstance(error, ProviderTimeout):
            # The call took at least this long: the latency estimate must see it.
            self.latency.record(name, latency_s)
        if isinstance(error, RateLimited) and error.retry_after:
            self.limits.note_retry_after(name, error.retry_after)
        if admission.grant is not None:
            # The request reached the provider and counts; its tokens were not used.
            self.limits.reconcile(admission.grant, actual_tokens=0)
        if cost_usd > 0:  # an answer that was billed, then refused (invalid output)
            self.budgets.settle(admission.reservation, actual_usd=cost_usd)
        else:
            self.budgets.refund(admission.reservation)
        self._book(admission, ok=False, tokens=(0, 0), cost_usd=cost_usd, latency_s=latency_s)

    def _book(
        self,
        admission: Admission,
        *,
        ok: bool,
        tokens: tuple[int, int],
        cost_usd: float,
        latency_s: float,
    ) -> None:
        # Every call that reached the provider goes into the cost ledger (chordal cost-report).
        self.ledger.record(
            tenant=admission.tenant,
            model=admission.model,
            agent=admission.agent,
            tier=admission.tier,
            tokens_in=tokens[0],
            tokens_out=tokens[1],
            cost_usd=cost_usd,
            latency_s=latency_s,
            ok=ok,
        )

    def abandoned(self, admission: Admission) -> None:
        """Give back everything for a call that never reached the provider (cancelled)."""
        if admission.grant is not None:
            self.limits.release(admission.grant)
        self.budgets.refund(admission.reservation)


def pool_size(settings: Settings) -> int:
    """Redis connections a worker process may hold: one per thread, and some to spare."""
    threads = max(
        settings.tier_concurrency, settings.router_concurrency, settings.local_concurrency
    )
    return threads + 32


def breaker_policy(settings: Settings) -> BreakerPolicy:
    """The breaker policy the settings describe."""
    return BreakerPolicy(
        window_s=settings.breaker_window_s,
        min_calls=settings.breaker_min_calls,
        failure_rate=settings.breaker_failure_rate,
        slow_call_s=settings.breaker_slow_call_s,
        slow_call_rate=settings.breaker_slow_call_rate,
        open_s=settings.breaker_open_s,
        max_open_s=max(settings.breaker_max_open_s, settings.breaker_open_s),
        probe_lease_s=settings.breaker_probe_lease_s,
    )
