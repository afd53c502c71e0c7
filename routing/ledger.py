"""The cost ledger: every LLM call counted in Redis by UTC day, tenant, model, agent and tier.

Layout: one hash per UTC day, ``<prefix>:<YYYY-MM-DD>``. Each field is the JSON array
``[tenant, model, agent, tier, counter]`` and holds an integer; a call to one deployment of a
model group of several (:mod:`routing.groups`) adds the deployment's id as a sixth element, so
the fields of a catalog without groups read as they always did; the counters are ``requests``,
``errors``, ``tokens_in``, ``tokens_out``, ``cost_micros`` (integer micro-dollars),
``latency_ms`` (the sum over the calls), and ``uncertain`` and ``uncertain_micros``: the calls
whose outcome is unknown (timed out, cancelled after the request was sent) and what they were
charged, their worst case (see :meth:`routing.fleet.Fleet.uncertain`). They are also in
``requests``, ``errors`` and ``cost_micros``. A counter that a call leaves at 0 is not written,
so days recorded before a counter existed read the same as days without such calls. JSON makes
the field unambiguous whatever the names hold (``:``, ``|``, quotes, spaces), where a separator
would need escaping.

Why a hash per day:

* Bounded keys. The key count is the number of days kept, not the number of tenants, models
  or agents; a day's hash grows with the combinations actually seen that day (tens to a few
  thousand fields), and the whole day expires as one key.
* No round trip of its own. :meth:`Ledger.queue_record` adds one script call to the fleet's
  bookkeeping pipeline after each call (:meth:`Ledger.record` sends it alone). It does the
  ``HINCRBY``s and the ``EXPIREAT``; ``HINCRBY`` is atomic, so concurrent workers on any number
  of hosts sum exactly, and integers (micro-dollars, milliseconds) never drift as float sums do.
* Cheap reads by day. A report over N days is N ``HGETALL`` in one pipeline -- no ``SCAN`` over
  the keyspace, no secondary index to keep in step.

Exactly once: each call is recorded under an id (``call_id``), and the script first sets
``<prefix>:once:<id>`` with ``SET NX`` and counts nothing if it was set already. A worker whose
Redis timed out after running the script (the reply was lost) can send it again without
counting the call twice. The marker lives ``once_ttl_s`` (10 minutes by default): long enough
for any retry of the same write, short enough that markers stay a few per second of traffic.

Retention: a day's hash expires ``retention_days`` after that day ends (UTC), set with
``EXPIREAT`` on every write so the expiry is the same whichever worker writes last. A call
recorded for a day already past its retention is therefore dropped at once.

Cost is rounded *up* to the micro-dollar, as :mod:`routing.budgets` rounds a charge, so a
tenant's ledger total for a day matches what its budget was charged.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import redis
from redis.typing import EncodableT

from routing.pipelined import Batch

DEFAULT_PREFIX = "chordal:ledger"
DEFAULT_RETENTION_DAYS = 90
DEFAULT_ONCE_TTL_S = 600
COUNTERS = (
    "requests", "errors", "tokens_in", "tokens_out", "cost_micros", "latency_ms", "uncertain",
    "uncertain_micros",
)  # fmt: skip
_MICROS = 1_000_000
# A report over years would be one enormous pipeline; no retention is that long in practice.
MAX_REPORT_DAYS = 3_660

# KEYS: the day's hash, the call's marker. ARGV: marker ttl (s), the day's expiry (epoch s),
# then field, amount pairs. Returns 1 if counted, 0 if this call id was counted already.
_RECORD = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class LedgerRow:
    """One day's counters for one (tenant, model, agent, tier) combination.

    ``uncertain`` calls (outcome unknown: timed out, or cancelled after the request was sent)
    are also counted in ``requests`` and ``errors``; ``uncertain_cost_usd``, the worst case
    they were charged, is part of ``cost_usd``.
    """

    day: date
    tenant: str
    model: str
    agent: str
    tier: str
    requests: int
    errors: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s_sum: float
    uncertain: int = 0
    uncertain_cost_usd: float = 0.0
    deployment: str = ""
    """The deployment of ``model`` called; "" where the model has one (its name is the key)."""

    @property
    def successes(self) -> int:
        """Calls that did not fail."""
        return self.requests - self.errors

    @property
    def mean_latency_s(self) -> float:
        """Mean seconds per call; 0 when there were none."""
        return self.latency_s_sum / self.requests if self.requests else 0.0


class Ledger:
    """Durable per-day LLM call counters in Redis.

    ::

        ledger = Ledger(redis.Redis.from_url(url), retention_days=90)
        ledger.record(tenant="acme", model="gpt-5", agent="summarizer", tier="premium",
                      tokens_in=812, tokens_out=143, cost_usd=0.00245, latency_s=3.1, ok=True,
                      call_id=admission.id)
        rows = ledger.rows(since_day=date(2026, 11, 1))
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        prefix: str = DEFAULT_PREFIX,
        once_ttl_s: float = DEFAULT_ONCE_TTL_S,
    ) -> None:
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, not {retention_days}")
        if not prefix:
            raise ValueError("prefix must not be empty")
        if once_ttl_s < 1:
            raise ValueError(f"once_ttl_s must be at least 1, not {once_ttl_s}")
        self.client = client
        self.retention_days = retention_days
        self.prefix = prefix
        self.once_ttl_s = math.ceil(once_ttl_s)
        self._record = client.register_script(_RECORD)

    def record(
        self,
        *,
        tenant: str,
        model: str,
        agent: str,
        tier: str,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
        latency_s: float,
        ok: bool,
        uncertain: bool = False,
        call_id: str | None = None,
        at: float | None = None,
        deployment: str | None = None,
    ) -> bool:
        """Count one call (``at``: epoch seconds, default now) in its UTC day, in one round trip.

        Returns False, counting nothing, if ``call_id`` was counted already (within
        ``once_ttl_s``); without a ``call_id`` the call is always counted.
        """
        batch = Batch(self.client)
        index = self._queue(
            batch, (tenant, model, agent, str(tier)), tokens=(tokens_in, tokens_out),
            cost_usd=cost_usd, latency_s=latency_s, ok=ok, uncertain=uncertain, call_id=call_id,
            at=at, deployment=deployment,
        )  # fmt: skip
        batch.execute()
        return bool(batch.result(index))

    def queue_record(
        self,
        batch: Batch,
        *,
        tenant: str,
        model: str,
        agent: str,
        tier: str,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
        latency_s: float,
        ok: bool,
        uncertain: bool = False,
        call_id: str | None = None,
        at: float | None = None,
        deployment: str | None = None,
    ) -> None:
        """:meth:`record`, sent with the rest of ``batch``.

        One script: the call's counters change together, and a ``call_id`` already counted
        changes none of them.
        """
        self._queue(
            batch, (tenant, model, agent, str(tier)), tokens=(tokens_in, tokens_out),
            cost_usd=cost_usd, latency_s=latency_s, ok=ok, uncertain=uncertain, call_id=call_id,
            at=at, deployment=deployment,
        )  # fmt: skip

    def _queue(
        self,
        batch: Batch,
        names: tuple[str, str, str, str],
        *,
        tokens: tuple[int, int],
        cost_usd: float,
        latency_s: float,
        ok: bool,
        uncertain: bool,
        call_id: str | None,
        at: float | None,
        deployment: str | None = None,
    ) -> int:
        if min(tokens) < 0:
            raise ValueError(f"token counts must not be negative, not {tokens[0]}/{tokens[1]}")
        if not (cost_usd >= 0 and math.isfinite(cost_usd)):
            raise ValueError(f"cost_usd must be a non-negative number, not {cost_usd}")
        if not (latency_s >= 0 and math.isfinite(latency_s)):
            raise ValueError(f"latency_s must be a non-negative number, not {latency_s}")
        if ok and uncertain:
            raise ValueError("a call whose outcome is uncertain must not be recorded as ok")
        day = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC).date()
        cost = _micros_up(cost_usd)
        amounts = (
            1, 0 if ok else 1, *tokens, cost, round(latency_s * 1000), int(uncertain),
            cost if uncertain else 0,
        )  # fmt: skip
        key = self.key(day)
        args: list[EncodableT] = [self.once_ttl_s, self._expires_at(day)]
        # A lone deployment is keyed by its model's name: its fields stay five elements long.
        extra = () if deployment in (None, "", names[1]) else (str(deployment),)
        for counter, amount in zip(COUNTERS, amounts, strict=True):
            if amount:
                args += [_field(*names, counter, *extra), amount]
        marker = f"{self.prefix}:once:{call_id or uuid.uuid4().hex}"
        return batch.script(self._record, [key, marker], args)

    def rows(self, *, since_day: date, until_day: date | None = None) -> list[LedgerRow]:
        """Every combination's counters for each UTC day from ``since_day`` to ``until_day``.

        ``until_day`` defaults to today (UTC); both ends are included. Rows are sorted by day,
        tenant, model, agent and tier.
        """
        until_day = until_day or datetime.now(UTC).date()
        span = (until_day - since_day).days + 1
        if span < 1:
            raise ValueError(f"since_day {since_day} is after until_day {until_day}")
        if span > MAX_REPORT_DAYS:
            raise ValueError(f"at most {MAX_REPORT_DAYS} days per read, not {span}")
        days = [since_day + timedelta(days=offset) for offset in range(span)]
        pipe = self.client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self.key(day))
        found = []
        for day, fields in zip(days, pipe.execute(), strict=True):
            found.extend(_day_rows(day, fields))
        return sorted(
            found,
            key=lambda row: (row.day, row.tenant, row.model, row.agent, row.tier, row.deployment),
        )

    def key(self, day: date) -> str:
        """The hash holding ``day``'s counters."""
        return f"{self.prefix}:{day.isoformat()}"

    def _expires_at(self, day: date) -> int:
        kept_until = day + timedelta(days=1 + self.retention_days)
        return int(
            datetime(kept_until.year, kept_until.month, kept_until.day, tzinfo=UTC).timestamp()
        )


def _field(*names: str) -> str:
    # Compact and ASCII-only: the same combination always encodes to the same field.
    return json.dumps(list(names), separators=(",", ":"))


def _day_rows(day: date, fields: dict[bytes, bytes]) -> list[LedgerRow]:
    counts: dict[tuple[str, str, str, str, str], dict[str, int]] = {}
    for raw_field, raw_value in fields.items():
        try:
            tenant, model, agent, tier, counter, *deployment = json.loads(raw_field)
        except (ValueError, TypeError):
            continue  # Not a ledger field (written by hand?): a report should still run.
        key = (tenant, model, agent, tier, "".join(map(str, deployment[:1])))
        counts.setdefault(key, {})[counter] = int(raw_value)
    return [
        LedgerRow(
            day=day,
            tenant=tenant,
            model=model,
            agent=agent,
            tier=tier,
            requests=found.get("requests", 0),
            errors=found.get("errors", 0),
            tokens_in=found.get("tokens_in", 0),
            tokens_out=found.get("tokens_out", 0),
            cost_usd=found.get("cost_micros", 0) / _MICROS,
            latency_s_sum=found.get("latency_ms", 0) / 1000,
            uncertain=found.get("uncertain", 0),
            uncertain_cost_usd=found.get("uncertain_micros", 0) / _MICROS,
            deployment=deployment,
        )
        for (tenant, model, agent, tier, deployment), found in counts.items()
    ]


def _micros_up(usd: float) -> int:
    # Rounding to 1e-6 micro-dollars first drops float noise (0.1 + 0.2) before rounding up.
    return math.ceil(round(usd * _MICROS, 6))
