"""The routing state every worker shares through Redis, and the admission of each LLM call.

:class:`Fleet` bundles the shared pieces -- circuit breakers (:mod:`routing.breaker`), rate
limits (:mod:`routing.limits`), budgets (:mod:`routing.budgets`), live latency
(:mod:`routing.latency`) and the cost ledger (:mod:`routing.ledger`) -- built from the one
settings object. Every call goes through three steps, in the worker thread that runs the task:

1. :meth:`Fleet.admit` reserves the call's worst-case cost in the tenant's and the job's
   budgets, takes a slot in the deployment's fleet-wide RPM/TPM limits, and asks its breaker
   last, so a half-open probe lease is never taken by a call that a budget or a limit then
   refuses. A refusal gives back what was taken and raises BudgetExceeded, RateLimited or
   CircuitOpen, carrying ``retry_after``.
2. The call.
3. :meth:`Fleet.succeeded` or :meth:`Fleet.failed` records the outcome: breaker, latency, limits
   (tokens reconciled with ``usage``, ``Retry-After`` and ``x-ratelimit-*`` respected), the
   budgets settled or refunded with the real cost, the ledger. :meth:`Fleet.uncertain` charges a
   call whose outcome is unknown (timed out, cancelled after sending) its reserved worst case,
   so spend is never under-counted; :meth:`Fleet.abandoned` gives back a call never sent.

Admission takes two round trips (budgets and limits together, then the breaker), recording one
(:class:`routing.pipelined.Batch`). Recording rides out a Redis blip: it is sent again for up to
``CHORDAL_REDIS_RETRY_S`` (:func:`routing.pipelined.send`). A retry may follow an attempt that
ran but whose reply was lost, so what charges is idempotent under the call's id
(:attr:`Admission.id`): the budget release and the ledger skip an id they have seen, and the
limits' reconcile sets rather than adds. The breaker and the latency board may count such a
call twice; one sample more in a window of many changes no decision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis

from routing.breaker import BreakerPolicy, Breakers
from routing.budgets import Budgets, Reservation
from routing.catalog import Model
from routing.fleet_reads import FleetReads
from routing.inflight import InFlight
from routing.latency import LatencyBoard
from routing.ledger import Ledger
from routing.limits import Grant, RateLimits
from routing.pipelined import Batch, send
from workers.errors import (
    BudgetExceeded,
    Cancelled,
    ChordalError,
    CircuitOpen,
    ConfigurationError,
    ProviderTimeout,
    RateLimited,
    RetryLater,
)
from workers.settings import Settings
from workers.tls import redis_ssl

# A Redis that does not answer must fail a routing step quickly, not hang a worker slot.
SOCKET_TIMEOUT_S = 5.0
# How long the budgets and the ledger remember a call's id (a small key each). A repeat comes
# only from a retry of the same write, within CHORDAL_REDIS_RETRY_S plus one attempt.
MIN_ONCE_TTL_S = 600.0
# failed() records these as uncertain(): the provider may have run, and billed, the call.
UNCERTAIN_ERRORS = (ProviderTimeout, Cancelled)


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
    # The deployment called, whose breaker, limits and latency record the call; "" in an
    # admission kept before model groups: the model's name was the key.
    deployment: str = ""

    @property
    def id(self) -> str:
        """The call's id (its budget reservation's): its outcome is charged once under it."""
        return self.reservation.id

    @property
    def key(self) -> str:
        """The deployment's key in the fleet's state (routing.groups)."""
        return self.deployment or self.model


class Fleet(FleetReads):
    """Breakers, limits, budgets and latency, shared by every worker through one Redis.

    What the router reads (:meth:`live_state`, :meth:`headroom`) is in
    :class:`routing.fleet_reads.FleetReads`.
    """

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.breakers = Breakers(client, breaker_policy(settings))
        self.limits = RateLimits(client, window=settings.rate_window_s)
        once = max(MIN_ONCE_TTL_S, 2 * settings.redis_retry_s)
        held = settings.budget_reservation_ttl_s
        self.budgets = Budgets(client, reservation_ttl=held, once_ttl=once)
        self.ledger = Ledger(client, retention_days=settings.ledger_retention_days, once_ttl_s=once)
        self.in_flight = InFlight(client, hold_s=settings.task_time_limit_s)
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
        # One pool per process, shared by its threads (see pool_size), that waits for a free
        # connection instead of raising (redis-py's default pool raises past 100).
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=pool_size(settings), timeout=SOCKET_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
            **redis_ssl(url, settings),
        )  # fmt: skip
        client = redis.Redis(connection_pool=pool)
        return cls(client, settings)

    def close(self) -> None:
        """Close the connections to Redis."""
        self.client.close()
        self.client.connection_pool.disconnect()

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
        reservation, grant = self._reserve_and_acquire(
            model,
            tenant=tenant,
            job_id=job_id,
            amount_usd=model.cost(prompt_tokens=prompt_tokens, completion_tokens=max_tokens),
            tokens=prompt_tokens + max_tokens,
            job_budget_usd=job_budget_usd,
        )
        key = model.deployment_id
        try:
            if grant is not None:
                grant.raise_if_refused()
            # Asked only once the budget and the limit said yes: see the module's docstring.
            permit = self.breakers.allow(key)
            if not permit.allowed:
                wait = (permit.retry_at or time.time()) - time.time()
                msg = f"{key}: circuit breaker {permit.state.replace('_', '-')}"
                raise CircuitOpen(msg, max(0.0, wait) if math.isfinite(wait) else None)
        except ChordalError:
            self._give_back(key, reservation, grant)
            raise
        if self._tracked:  # least-busy: counted only once admitted (advice; errors are logged)
            batch = Batch(self.client)
            self.in_flight.queue_add(batch, key, reservation.id)
            batch.execute()
        return Admission(
            model=model.name,
            reservation=reservation,
            grant=grant,
            probe_token=permit.probe_token,
            tenant=tenant,
            agent=agent,
            tier=str(model.tier),
            deployment=key,
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
        """Record a call that answered: breaker, latency, real tokens and cost.

        Retries a Redis that fails for up to ``CHORDAL_REDIS_RETRY_S``, then raises its error.
        """
        name, grant = admission.key, admission.grant

        def queue(batch: Batch) -> None:
            self.breakers.queue_record(
                batch, name, ok=True, latency_s=latency_s, probe_token=admission.probe_token
            )
            self.latency.queue_record(batch, name, latency_s)
            if grant is not None:
                self.limits.queue_reconcile(batch, grant, actual_tokens=tokens_in + tokens_out)
            if headers:
                self.limits.queue_headers(batch, name, headers)
            self.budgets.queue_settle(batch, admission.reservation, actual_usd=cost_usd)

        self._record(admission, queue, ok=True, cost_usd=cost_usd, latency_s=latency_s,
                     tokens=(tokens_in, tokens_out))  # fmt: skip

    def failed(
        self, admission: Admission, error: BaseException, *, latency_s: float, cost_usd: float = 0.0
    ) -> None:
        """Record a call that failed; only retryable errors count against the breaker.

        A timeout or a cancel (:data:`UNCERTAIN_ERRORS`) leaves the outcome unknown: it is
        recorded as :meth:`uncertain` does. Retries Redis as :meth:`succeeded` does.
        """
        uncertain = isinstance(error, UNCERTAIN_ERRORS)
        self._failed(admission, error, latency_s=latency_s, cost_usd=cost_usd, uncertain=uncertain)

    def uncertain(self, admission: Admission, error: BaseException, *, latency_s: float) -> None:
        """Record a call whose outcome is unknown: the request was sent, then it timed out or
        was cancelled. The provider may have answered and billed it in full, so it is charged
        its reserved worst case (budgets and ledger, marked ``uncertain`` there) and keeps the
        tokens it reserved in the rate limit. It counts against the breaker only if ``error``
        is retryable (a timeout is; a cancel is not). Retries Redis as :meth:`succeeded` does.
        """
        self._failed(admission, error, latency_s=latency_s, cost_usd=0.0, uncertain=True)

    def abandoned(self, admission: Admission) -> None:
        """Give back everything for a call that never reached the provider (cancelled before
        its request was sent; after that, use :meth:`uncertain`). Retries Redis as
        :meth:`succeeded` does."""
        self._give_back(admission.key, admission.reservation, admission.grant)

    def _reserve_and_acquire(
        self,
        model: Model,
        *,
        tenant: str,
        job_id: str,
        amount_usd: float,
        tokens: int,
        job_budget_usd: float | None,
    ) -> tuple[Reservation, Grant | None]:
        # Both in one round trip; the rules are those of asking one after the other: a budget
        # refusal wins and takes nothing, so a limit slot granted beside it is given back.
        batch = Batch(self.client)
        reserved = self.budgets.queue_reserve(
            batch,
            tenant=tenant,
            job_id=job_id,
            amount_usd=amount_usd,
            tenant_limit_usd=self.settings.tenant_budget_usd(tenant),
            job_limit_usd=job_budget_usd,
        )
        acquired = None
        if model.rpm is not None or model.tpm is not None:
            acquired = self.limits.queue_acquire(
                batch,
                model.deployment_id,
                rpm=model.rpm,
                tpm=model.tpm,
                tokens=min(tokens, model.tpm) if model.tpm else tokens,
            )
        batch.execute()
        grant = acquired() if acquired is not None else None
        try:
            return reserved(), grant
        except BudgetExceeded:
            if grant is not None:
                self.limits.release(grant)
            raise

    def _give_back(self, model: str, reservation: Reservation, grant: Grant | None) -> None:
        def queue(batch: Batch) -> None:
            if grant is not None:
                self.limits.queue_release(batch, grant)
            self.budgets.queue_refund(batch, reservation)
            self._untrack(batch, model, reservation.id)

        what = f"giving back {model}'s call {reservation.id}"
        send(self.client, queue, budget_s=self.settings.redis_retry_s, what=what)

    @property
    def _tracked(self) -> bool:
        # Calls in flight are counted only for the strategy that reads them.
        return self.settings.deployment_strategy == "least-busy"

    def _untrack(self, batch: Batch, key: str, call_id: str) -> None:
        if self._tracked:
            self.in_flight.queue_remove(batch, key, call_id)

    def _failed(
        self, admission: Admission, error: BaseException, *, latency_s: float, cost_usd: float,
        uncertain: bool,
    ) -> None:  # fmt: skip
        name, grant = admission.key, admission.grant
        charge = admission.reservation.amount_usd if uncertain else cost_usd

        retryable = isinstance(error, RetryLater)

        def queue(batch: Batch) -> None:
            # A cancel says nothing of the deployment: neither a failure nor a probe's success.
            if retryable or not uncertain:
                self.breakers.queue_record(
                    batch, name, ok=False, latency_s=latency_s, retryable=retryable,
                    probe_token=admission.probe_token,
                )  # fmt: skip
            if isinstance(error, ProviderTimeout):
                # The call took at least this long: the latency estimate must see it.
                self.latency.queue_record(batch, name, latency_s)
            if isinstance(error, RateLimited) and error.retry_after:
                self.limits.queue_retry_after(batch, name, error.retry_after)
            if grant is not None and not uncertain:
                # The request reached the provider and counts; its tokens were not used.
                self.limits.queue_reconcile(batch, grant, actual_tokens=0)
            if charge > 0:  # billed, then refused (invalid output); or maybe billed (uncertain)
                self.budgets.queue_settle(batch, admission.reservation, actual_usd=charge)
            else:
                self.budgets.queue_refund(batch, admission.reservation)

        self._record(admission, queue, ok=False, cost_usd=charge, latency_s=latency_s,
                     uncertain=uncertain)  # fmt: skip

    def _record(
        self, admission: Admission, queue: Callable[[Batch], None], *, ok: bool,
        cost_usd: float, latency_s: float, tokens: tuple[int, int] = (0, 0),
        uncertain: bool = False,
    ) -> None:  # fmt: skip
        # Every call that reached the provider goes into the cost ledger (chordal cost-report),
        # under its id and the first attempt's time: a retry neither recounts nor re-dates it.
        at = time.time()

        def queue_all(batch: Batch) -> None:
            queue(batch)
            self._untrack(batch, admission.key, admission.id)
            self.ledger.queue_record(
                batch, tenant=admission.tenant, model=admission.model, agent=admission.agent,
                tier=admission.tier, tokens_in=tokens[0], tokens_out=tokens[1],
                cost_usd=cost_usd, latency_s=latency_s, ok=ok, uncertain=uncertain,
                call_id=admission.id, at=at, deployment=admission.key,
            )  # fmt: skip

        what = f"recording {admission.key}'s call {admission.id}"
        send(self.client, queue_all, budget_s=self.settings.redis_retry_s, what=what)


def pool_size(settings: Settings) -> int:
    """Redis connections a worker process may hold for the fleet state (the pool blocks, not
    raises, when they are all busy): ``CHORDAL_REDIS_CONNECTIONS``, as for the broker and the
    result backend (see :mod:`workers.redis_pools` for what a smaller cap costs and saves)."""
    return settings.redis_pool_size


def breaker_policy(settings: Settings) -> BreakerPolicy:
    """The breaker policy the settings describe."""
    return BreakerPolicy(
        window_s=settings.breaker_window_s, min_calls=settings.breaker_min_calls,
        failure_rate=settings.breaker_failure_rate, slow_call_s=settings.breaker_slow_call_s,
        slow_call_rate=settings.breaker_slow_call_rate, open_s=settings.breaker_open_s,
        max_open_s=max(settings.breaker_max_open_s, settings.breaker_open_s),
        probe_lease_s=settings.breaker_probe_lease_s,
    )  # fmt: skip
