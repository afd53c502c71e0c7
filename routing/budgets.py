"""Tenant and job budgets that concurrent calls cannot overshoot.

LiteLLM adds a call's cost to a budget after the call (upstream #34732), so fifty calls that start
together all see the same spend and all go ahead. Here a call first *reserves* its worst-case cost
(prompt plus ``max_tokens`` at the model's prices), and one Lua script checks and reserves in every
budget the call belongs to -- the tenant's budget for the UTC day and the job's own -- so that
``spent + reserved + amount <= limit`` holds in each, or reserves in none and raises
:class:`~workers.errors.BudgetExceeded` naming the budget. After the call :meth:`Budgets.settle`
swaps the reservation for the actual cost; when the call fails, :meth:`Budgets.refund` drops it.

A worker killed mid-call never settles, so each reservation has an id and an expiry: a sorted set
per budget scores reservation ids by expiry, the budget's hash holds each one's amount beside the
running totals, and every script first reclaims reservations past their expiry. One key per
reservation with a TTL was rejected: Redis cannot tell a total which keys expired, so the reserved
sum would need a scan or keyspace notifications (which are lossy). The sorted set reclaims
exactly, when it matters (at the next check), with no sweeper process. The expiry must outlast
the longest call (default 15 minutes); settling after it still charges the actual cost.

A reservation is released (settled or refunded) once: the release script first sets the marker
``<prefix>:released:<id>`` (``SET NX``, kept ``once_ttl`` -- 10 minutes by default -- for any
retry of the same write) and changes nothing if it was set already. A worker whose Redis timed
out after the script ran, its reply lost, can therefore send it again without charging twice;
and only the first of two outcomes recorded for one call counts.

Amounts are integer micro-dollars inside Redis -- reservations and costs rounded up, limits down
-- so totals never drift; the API speaks float USD. The tenant's day is the UTC date when the
reservation is made, and the reservation is settled against that day. Keys expire: a tenant's day
``tenant_retention`` after it ends, a job's budget ``job_ttl`` after its last reservation. Time
is the caller's clock (``now``, epoch seconds, injectable): the day key is chosen by the caller,
and expiries are minutes long, so a few seconds of skew between pods do not matter.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from routing.budgets_lua import RELEASE, RESERVE, USAGE
from routing.pipelined import Batch
from workers.errors import BudgetExceeded

DEFAULT_PREFIX = "chordal:budget"
DEFAULT_RESERVATION_TTL_S = 15 * 60.0
DEFAULT_TENANT_RETENTION_S = 7 * 86_400.0
DEFAULT_JOB_TTL_S = 7 * 86_400.0
DEFAULT_ONCE_TTL_S = 600.0
_MICROS = 1_000_000


@dataclass(frozen=True)
class Reservation:
    """Money held for one call in a tenant's daily budget and/or a job's budget."""

    id: str
    amount_usd: float
    expires_at: float
    tenant: str | None
    day: str | None
    job_id: str | None


@dataclass(frozen=True)
class Usage:
    """A budget's settled spend and what open reservations hold, in USD."""

    spent_usd: float
    reserved_usd: float


@dataclass(frozen=True)
class _Budget:
    keys: tuple[str, str]
    label: str
    limit_micros: int | None
    ttl_s: int


@dataclass(frozen=True)
class _Ask:
    """A reservation as the reserve script is asked for it, and how to read the answer."""

    reservation: Reservation
    budgets: list[_Budget]
    amount: int
    args: list[str | float]

    def answer(self, reply: list[int]) -> Reservation:
        ok, *before = reply
        if ok:
            return self.reservation
        refusals = [
            f"{budget.label} ${_usd(budget.limit_micros)}: ${_usd(used)} spent or reserved, "
            f"this call may cost up to ${_usd(self.amount)}"
            for budget, used in zip(self.budgets, before, strict=True)
            if budget.limit_micros is not None and used + self.amount > budget.limit_micros
        ]
        raise BudgetExceeded("; ".join(refusals))


class Budgets:
    """Per-tenant daily and per-job budgets in Redis, reserved before a call and settled after.

    ::

        budgets = Budgets(redis.Redis.from_url(url))
        worst_case = model.cost(prompt_tokens=prompt, completion_tokens=max_tokens)
        held = budgets.reserve(tenant="acme", job_id=job_id, amount_usd=worst_case,
                               tenant_limit_usd=5.0, job_limit_usd=0.50)
        try:
            response = call()
        except Exception:
            budgets.refund(held)
            raise
        budgets.settle(held, actual_usd=litellm.completion_cost(response))
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        reservation_ttl: float | timedelta = DEFAULT_RESERVATION_TTL_S,
        tenant_retention: float | timedelta = DEFAULT_TENANT_RETENTION_S,
        job_ttl: float | timedelta = DEFAULT_JOB_TTL_S,
        once_ttl: float | timedelta = DEFAULT_ONCE_TTL_S,
    ) -> None:
        self.prefix = prefix
        self.once_ttl_s = math.ceil(_positive_seconds(once_ttl, "once_ttl"))
        self.reservation_ttl_s = _positive_seconds(reservation_ttl, "reservation_ttl")
        self.tenant_retention_s = _positive_seconds(tenant_retention, "tenant_retention")
        self.job_ttl_s = _positive_seconds(job_ttl, "job_ttl")
        self._reserve = client.register_script(RESERVE)
        self._release = client.register_script(RELEASE)
        self._usage = client.register_script(USAGE)

    def reserve(
        self,
        *,
        tenant: str | None,
        job_id: str | None,
        amount_usd: float,
        tenant_limit_usd: float | None,
        job_limit_usd: float | None,
        ttl: float | timedelta | None = None,
        now: float | None = None,
    ) -> Reservation:
        """Hold ``amount_usd`` in the tenant's day and the job's budget, or raise BudgetExceeded.

        A budget given without a limit is tracked but never refuses.
        """
        limits = (tenant_limit_usd, job_limit_usd)
        ask = self._ask(
            tenant=tenant, job_id=job_id, amount_usd=amount_usd, limits=limits, ttl=ttl, now=now
        )
        return ask.answer(self._reserve(keys=_keys(ask.budgets), args=ask.args))

    def queue_reserve(
        self,
        batch: Batch,
        *,
        tenant: str | None,
        job_id: str | None,
        amount_usd: float,
        tenant_limit_usd: float | None,
        job_limit_usd: float | None,
    ) -> Callable[[], Reservation]:
        """:meth:`reserve`, sent with the rest of ``batch``; call the result after it ran."""
        limits = (tenant_limit_usd, job_limit_usd)
        ask = self._ask(
            tenant=tenant, job_id=job_id, amount_usd=amount_usd, limits=limits, ttl=None, now=None
        )
        index = batch.script(self._reserve, _keys(ask.budgets), ask.args)
        return lambda: ask.answer(batch.result(index))

    def settle(self, reservation: Reservation, *, actual_usd: float) -> bool:
        """Replace the reservation with the call's actual cost; False if it had expired already
        or was released before.

        The cost is charged even after expiry (the money was spent), but only by the first
        release of the reservation: settling it again changes nothing.
        """
        reply = self._release(*self._release_call(reservation, charge=_charge(actual_usd)))
        return int(reply) > 0

    def refund(self, reservation: Reservation) -> bool:
        """Drop the reservation of a call that failed; False if it was no longer held."""
        return int(self._release(*self._release_call(reservation, charge=0))) > 0

    def queue_settle(self, batch: Batch, reservation: Reservation, *, actual_usd: float) -> None:
        """:meth:`settle`, sent with the rest of ``batch``."""
        batch.script(self._release, *self._release_call(reservation, charge=_charge(actual_usd)))

    def queue_refund(self, batch: Batch, reservation: Reservation) -> None:
        """:meth:`refund`, sent with the rest of ``batch``."""
        batch.script(self._release, *self._release_call(reservation, charge=0))

    def usage(
        self, *, tenant: str | None = None, job_id: str | None = None, now: float | None = None
    ) -> Usage:
        """Spent and reserved USD of one budget: the tenant's day (at ``now``) or the job's."""
        _check_one(tenant, job_id)
        budgets = self._budgets(tenant=tenant, job_id=job_id, limits=(None, None), now=now)
        ((spent, reserved),) = self._totals(budgets, now=now)
        return Usage(spent_usd=spent / _MICROS, reserved_usd=reserved / _MICROS)

    def spent(
        self, *, tenant: str | None = None, job_id: str | None = None, now: float | None = None
    ) -> float:
        """Settled USD of one budget: the tenant's day (at ``now``) or the job's."""
        return self.usage(tenant=tenant, job_id=job_id, now=now).spent_usd

    def remaining(
        self,
        *,
        tenant: str | None = None,
        job_id: str | None = None,
        limit_usd: float,
        now: float | None = None,
    ) -> float:
        """USD of ``limit_usd`` neither spent nor reserved in one budget."""
        _check_one(tenant, job_id)
        limits = (limit_usd, limit_usd)
        budgets = self._budgets(tenant=tenant, job_id=job_id, limits=limits, now=now)
        return self._headroom(budgets, now=now) or 0.0

    def affordable(
        self,
        *,
        tenant: str | None,
        job_id: str | None,
        tenant_limit_usd: float | None,
        job_limit_usd: float | None,
        now: float | None = None,
    ) -> float | None:
        """The largest amount :meth:`reserve` would accept now; None when nothing limits it.

        The router uses it to fall back to a cheaper model instead of being refused.
        """
        limits = (tenant_limit_usd, job_limit_usd)
        budgets = self._budgets(tenant=tenant, job_id=job_id, limits=limits, now=now)
        return self._headroom(budgets, now=now)

    def _headroom(self, budgets: list[_Budget], *, now: float | None) -> float | None:
        limited = [budget for budget in budgets if budget.limit_micros is not None]
        if not limited:
            return None
        totals = self._totals(limited, now=now)
        left = [
            (budget.limit_micros or 0) - spent - reserved
            for budget, (spent, reserved) in zip(limited, totals, strict=True)
        ]
        return max(0, min(left)) / _MICROS

    def _totals(self, budgets: list[_Budget], *, now: float | None) -> list[tuple[int, int]]:
        flat = self._usage(keys=_keys(budgets), args=[repr(_clock(now))])
        return list(zip(flat[::2], flat[1::2], strict=True))

    def _ask(
        self,
        *,
        tenant: str | None,
        job_id: str | None,
        amount_usd: float,
        limits: tuple[float | None, float | None],
        ttl: float | timedelta | None,
        now: float | None,
    ) -> _Ask:
        if amount_usd < 0:
            raise ValueError(f"amount_usd must not be negative, not {amount_usd}")
        now = time.time() if now is None else now
        ttl_s = self.reservation_ttl_s if ttl is None else _positive_seconds(ttl, "ttl")
        budgets = self._budgets(
            tenant=tenant, job_id=job_id, limits=limits, now=now, at_least_s=ttl_s
        )
        reservation = Reservation(
            id=uuid.uuid4().hex,
            amount_usd=amount_usd,
            expires_at=now + ttl_s,
            tenant=tenant,
            day=_day(now) if tenant is not None else None,
            job_id=job_id,
        )
        amount = _micros_up(amount_usd)
        args: list[str | float] = [repr(now), reservation.id, amount, repr(reservation.expires_at)]
        for budget in budgets:
            args += [-1 if budget.limit_micros is None else budget.limit_micros, budget.ttl_s]
        return _Ask(reservation, budgets, amount, args)

    def _release_call(
        self, reservation: Reservation, *, charge: int
    ) -> tuple[list[str], list[str | int]]:
        keys: list[str] = []
        args: list[str | int] = [reservation.id, charge, self.once_ttl_s]
        if reservation.tenant is not None and reservation.day is not None:
            keys += self._scope_keys(f"tenant:{reservation.tenant}:{reservation.day}")
            args.append(max(1, self._tenant_ttl_s(reservation.day, now=time.time())))
        if reservation.job_id is not None:
            keys += self._scope_keys(f"job:{reservation.job_id}")
            args.append(math.ceil(self.job_ttl_s))
        keys.append(f"{self.prefix}:released:{reservation.id}")
        return keys, args

    def _budgets(
        self,
        *,
        tenant: str | None,
        job_id: str | None,
        limits: tuple[float | None, float | None],
        now: float | None,
        at_least_s: float = 0.0,
    ) -> list[_Budget]:
        now = _clock(now)
        budgets: list[_Budget] = []
        if tenant is not None:
            day = _day(now)
            keys = self._scope_keys(f"tenant:{tenant}:{day}")
            ttl_s = max(self._tenant_ttl_s(day, now=now), math.ceil(at_least_s))
            budgets.append(_Budget(keys, f"tenant {tenant} daily budget", _limit(limits[0]), ttl_s))
        if job_id is not None:
            keys = self._scope_keys(f"job:{job_id}")
            ttl_s = math.ceil(max(self.job_ttl_s, at_least_s))
            budgets.append(_Budget(keys, f"job {job_id} budget", _limit(limits[1]), ttl_s))
        if not budgets:
            raise ValueError("a reservation needs a tenant, a job_id or both")
        return budgets

    def _tenant_ttl_s(self, day: str, *, now: float) -> int:
        day_ends = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        return math.ceil(day_ends.timestamp() - now + self.tenant_retention_s)

    def _scope_keys(self, scope: str) -> tuple[str, str]:
        return f"{self.prefix}:{scope}", f"{self.prefix}:{scope}:held"


def _check_one(tenant: str | None, job_id: str | None) -> None:
    if (tenant is None) == (job_id is None):
        raise ValueError("name exactly one budget: tenant or job_id")


def _keys(budgets: list[_Budget]) -> list[str]:
    return [key for budget in budgets for key in budget.keys]


def _clock(now: float | None) -> float:
    return time.time() if now is None else now


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, tz=UTC).date().isoformat()


def _limit(usd: float | None) -> int | None:
    if usd is None:
        return None
    if usd < 0:
        raise ValueError(f"a budget limit must not be negative, not {usd}")
    return _micros_down(usd)


def _micros_up(usd: float) -> int:
    # Rounding to 1e-6 micro-dollars first drops float noise (0.1 + 0.2) before rounding up.
    return math.ceil(round(usd * _MICROS, 6))


def _micros_down(usd: float) -> int:
    return math.floor(round(usd * _MICROS, 6))


def _usd(micros: int | None) -> str:
    """``5.00``, ``4.99``, ``0.000015``: cents always, more digits only when they matter."""
    whole, _, fraction = f"{(micros or 0) / _MICROS:.6f}".partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _charge(actual_usd: float) -> int:
    if actual_usd < 0:
        raise ValueError(f"actual_usd must not be negative, not {actual_usd}")
    return _micros_up(actual_usd)


def _positive_seconds(value: float | timedelta, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
    return seconds
