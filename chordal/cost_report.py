"""Cost reports from the ledger: spend by day, model and tenant, and cheaper models to try.

Plain functions, each testable without Redis or a terminal (the renderers are in
:mod:`chordal.cost_render`)::

    since = parse_since("7d")
    rows = Ledger(client).rows(since_day=since)
    report = summarise(rows, since=since, until=today)
    advice = recommend(rows, catalog, days=report.span_days, task_kinds=kinds)
    print(render_markdown(report, advice))

A recommendation compares what an agent's calls actually cost (the ledger's recorded cost) with
what the same tokens would have cost on a cheaper-tier catalog model whose quality for the
agent's task kind is within ``margin`` of the model used. It assumes the cheaper model would
answer with as many tokens; it is advice to try, not a measurement.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import reduce
from typing import TypeVar

from routing.catalog import Catalog
from routing.ledger import LedgerRow
from workers.tiers import QUALITY_TIERS, TaskKind

DEFAULT_MARGIN = 0.05
# Advice moves an agent down the quality tiers only: the local tier is chosen for where the
# model runs, not for its price.
_TIER_RANK = {tier.value: rank for rank, tier in enumerate(QUALITY_TIERS)}
_DURATION = re.compile(r"(\d+)\s*([dh])")
# Float noise must not push a model just inside the margin out of it.
_EPSILON = 1e-9

K = TypeVar("K", bound=Hashable)


def parse_since(text: str, *, now: datetime | None = None) -> date:
    """The first UTC day a report covers.

    ``7d``: the last seven days, today included; ``24h``: from the day that 24 hours ago fell
    in; ``2026-11-01``: from that day. Raises ValueError with the accepted forms.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    today = now.date()
    cleaned = text.strip().lower()
    duration = _DURATION.fullmatch(cleaned)
    if duration:
        count, unit = int(duration[1]), duration[2]
        if count < 1:
            raise ValueError(f"--since {text!r} must be at least 1{unit}")
        if unit == "d":
            return today - timedelta(days=count - 1)
        return (now - timedelta(hours=count)).date()
    try:
        day = date.fromisoformat(cleaned)
    except ValueError:
        msg = f"--since {text!r} is neither a duration (7d, 24h) nor a date (2026-11-01)"
        raise ValueError(msg) from None
    if day > today:
        raise ValueError(f"--since {day} is in the future (today is {today} UTC)")
    return day


@dataclass(frozen=True)
class Totals:
    """Counters summed over some ledger rows."""

    requests: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s_sum: float = 0.0

    def plus(self, row: LedgerRow) -> Totals:
        """These totals with ``row`` counted in."""
        return Totals(
            requests=self.requests + row.requests,
            errors=self.errors + row.errors,
            tokens_in=self.tokens_in + row.tokens_in,
            tokens_out=self.tokens_out + row.tokens_out,
            cost_usd=self.cost_usd + row.cost_usd,
            latency_s_sum=self.latency_s_sum + row.latency_s_sum,
        )

    @property
    def success_rate(self) -> float:
        """Share of calls that succeeded; 0 without calls."""
        return (self.requests - self.errors) / self.requests if self.requests else 0.0

    @property
    def error_rate(self) -> float:
        """Share of calls that failed; 0 without calls."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def mean_latency_s(self) -> float:
        """Mean seconds per call; 0 without calls."""
        return self.latency_s_sum / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, int | float]:
        """The counters and rates, rounded for output."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "success_rate": round(self.success_rate, 4),
            "error_rate": round(self.error_rate, 4),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": round(self.cost_usd, 6),
            "mean_latency_s": round(self.mean_latency_s, 3),
        }


@dataclass(frozen=True)
class Report:
    """Ledger rows summed by day, model and tenant; ``days`` lists every day shown, in order."""

    days: tuple[date, ...]
    rows: tuple[LedgerRow, ...]
    total: Totals
    by_day: Mapping[date, Totals]
    by_model: Mapping[str, Totals]
    by_tenant: Mapping[str, Totals]
    daily_by_model: Mapping[date, Mapping[str, Totals]]
    daily_by_tenant: Mapping[date, Mapping[str, Totals]]
    model_tiers: Mapping[str, tuple[str, ...]]

    @property
    def span_days(self) -> int:
        """How many days the report covers (at least 1)."""
        return max(1, len(self.days))


def summarise(
    rows: Iterable[LedgerRow], *, since: date | None = None, until: date | None = None
) -> Report:
    """Sum ``rows`` by day, model and tenant.

    Every day from ``since`` to ``until`` is listed, idle ones too; without them, the days
    between the first and the last row.
    """
    rows = tuple(sorted(rows, key=lambda r: (r.day, r.tenant, r.model, r.agent, r.tier)))
    seen = [row.day for row in rows]
    first = since or min(seen, default=None)
    last = until or max(seen, default=first)
    days: tuple[date, ...] = ()
    if first is not None and last is not None:
        days = tuple(first + timedelta(days=n) for n in range((last - first).days + 1))
    tiers: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        tiers[row.model].add(row.tier)
    return Report(
        days=days,
        rows=rows,
        total=reduce(Totals.plus, rows, Totals()),
        by_day=_group(rows, lambda row: row.day),
        by_model=_group(rows, lambda row: row.model),
        by_tenant=_group(rows, lambda row: row.tenant),
        daily_by_model=_daily(rows, lambda row: row.model),
        daily_by_tenant=_daily(rows, lambda row: row.tenant),
        model_tiers={model: tuple(sorted(found)) for model, found in sorted(tiers.items())},
    )


def _group(rows: Iterable[LedgerRow], key: Callable[[LedgerRow], K]) -> dict[K, Totals]:
    groups: dict[K, Totals] = {}
    for row in rows:
        groups[key(row)] = groups.get(key(row), Totals()).plus(row)
    return groups


def _daily(
    rows: Sequence[LedgerRow], key: Callable[[LedgerRow], str]
) -> dict[date, dict[str, Totals]]:
    by_day: dict[date, list[LedgerRow]] = defaultdict(list)
    for row in rows:
        by_day[row.day].append(row)
    return {day: _group(day_rows, key) for day, day_rows in by_day.items()}


@dataclass(frozen=True)
class Recommendation:
    """A cheaper catalog model for the calls an agent made on one model of its usual tier."""

    agent: str
    task_kind: TaskKind
    tier: str
    share: float
    model: str
    quality: float
    candidate: str
    candidate_tier: str
    candidate_quality: float
    margin: float
    cost_usd_per_day: float
    candidate_usd_per_day: float

    @property
    def saves_usd_per_day(self) -> float:
        """What the switch would have saved per day at the same token counts."""
        return self.cost_usd_per_day - self.candidate_usd_per_day

    @property
    def message(self) -> str:
        """One line an operator can act on."""
        return (
            f"agent `{self.agent}` on {self.tier} ({self.model}): {self.candidate} "
            f"({self.candidate_tier}) scores within {self.margin:g} for {self.task_kind}; "
            f"saves {usd(self.saves_usd_per_day)}/day"
        )


def recommend(
    rows: Iterable[LedgerRow],
    catalog: Catalog,
    *,
    days: int,
    task_kinds: Mapping[str, TaskKind],
    margin: float = DEFAULT_MARGIN,
) -> list[Recommendation]:
    """Cheaper-tier models for agents whose calls went mostly (over half) to one tier.

    For each model the agent used on that tier, the cheapest catalog model of a lower tier whose
    quality for the agent's task kind (``task_kinds``, from the agent registry) is at most
    ``margin`` below, if it would have cost less for the same tokens. Agents without a known
    task kind and models no longer in the catalog are skipped. Biggest saving first.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    by_agent: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in rows:
        by_agent[row.agent].append(row)
    found = [
        advice
        for agent, agent_rows in sorted(by_agent.items())
        if agent in task_kinds
        for advice in _advise(
            agent, agent_rows, catalog=catalog, kind=task_kinds[agent], days=days, margin=margin
        )
    ]
    return sorted(found, key=lambda rec: (-rec.saves_usd_per_day, rec.agent, rec.model))


def _advise(
    agent: str,
    rows: Sequence[LedgerRow],
    *,
    catalog: Catalog,
    kind: TaskKind,
    days: int,
    margin: float,
) -> list[Recommendation]:
    calls: Counter[str] = Counter()
    for row in rows:
        calls[row.tier] += row.requests
    total = sum(calls.values())
    if not total:
        return []
    tier, count = calls.most_common(1)[0]
    if 2 * count <= total or tier not in _TIER_RANK:
        return []
    names = {model.name for model in catalog.models}
    used = _group(
        [row for row in rows if row.tier == tier and row.model in names], lambda row: row.model
    )
    advice = []
    for name, spent in sorted(used.items()):
        quality = catalog.get(name).quality(kind)
        priced = {
            other.name: other.cost(
                prompt_tokens=spent.tokens_in, completion_tokens=spent.tokens_out
            )
            for other in catalog.models
            if other.tier.value in _TIER_RANK
            and _TIER_RANK[other.tier.value] < _TIER_RANK[tier]
            and other.quality(kind) >= quality - margin - _EPSILON
        }
        if not priced:
            continue
        # Cheapest first; on a tie in price, the better model.
        best = catalog.get(
            min(priced, key=lambda other: (priced[other], -catalog.get(other).quality(kind), other))
        )
        if priced[best.name] >= spent.cost_usd:
            continue
        advice.append(
            Recommendation(
                agent=agent,
                task_kind=kind,
                tier=tier,
                share=count / total,
                model=name,
                quality=quality,
                candidate=best.name,
                candidate_tier=best.tier.value,
                candidate_quality=best.quality(kind),
                margin=margin,
                cost_usd_per_day=spent.cost_usd / days,
                candidate_usd_per_day=priced[best.name] / days,
            )
        )
    return advice


def usd(amount: float) -> str:
    """``$12.34``; below a cent, up to six decimals (``$0.000123``) so small spend still shows."""
    if abs(amount) >= 0.01 or amount == 0:
        return f"${amount:,.2f}"
    return f"${amount:.6f}".rstrip("0")
