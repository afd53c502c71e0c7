"""How many Redis round trips the fleet makes around a call, and that batching them never
applies a command twice or leaves one out, against a real Valkey."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import redis

from chordal.broker import EmbeddedBroker
from routing.catalog import Model
from routing.fleet import Fleet, pool_size
from tests.support import FLEET_CALL as CALL
from tests.support import FLEET_MODEL as MODEL
from workers.errors import BudgetExceeded, RateLimited
from workers.settings import Settings

T = TypeVar("T")

# The provider says the tokens are used up: succeeded() then blocks the model too.
EXHAUSTED = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20s"}

Fleets = tuple[Fleet, list[bytes]]


@pytest.fixture
def counted(valkey: EmbeddedBroker, connect: Callable[[], redis.Redis]) -> Iterator[Fleets]:
    """A fleet over an emptied server, and every packet its client sends (one per round trip)."""
    connect()
    sent: list[bytes] = []

    class Counting(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            chunks = [command] if isinstance(command, bytes | str) else command
            sent.append(b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks))
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    pool = redis.ConnectionPool.from_url(valkey.url, connection_class=Counting)
    client = redis.Redis(connection_pool=pool)
    yield Fleet(client, Settings(broker_url="redis://unused", breaker_min_calls=2)), sent
    client.close()
    pool.disconnect()


def admit(fleet: Fleet, model: Model = MODEL, job: str = "job-1", **call: object):
    return fleet.admit(model, tenant="acme", job_id=job, **{**CALL, **call})  # type: ignore[arg-type]


def measured(sent: list[bytes], step: Callable[[], T]) -> tuple[T, int]:
    before = len(sent)
    result = step()
    return result, len(sent) - before


def every_step(fleet: Fleet, sent: list[bytes], prefix: str) -> dict[str, int]:
    """Round trips of each step of three calls: one answered, one failed, one cancelled."""
    limited, free = replace(MODEL, name=f"{prefix}-a"), replace(MODEL, name=f"{prefix}-b", rpm=None)
    trips: dict[str, int] = {}
    held, trips["admit, rpm"] = measured(sent, lambda: admit(fleet, limited))
    _, trips["succeeded"] = measured(
        sent,
        lambda: fleet.succeeded(
            held, latency_s=0.2, tokens_in=10, tokens_out=5, cost_usd=0.001, headers=EXHAUSTED
        ),
    )
    held, trips["admit, no rpm"] = measured(sent, lambda: admit(fleet, free))
    _, trips["failed"] = measured(
        sent, lambda: fleet.failed(held, RateLimited("429", 5.0), latency_s=0.1)
    )
    held = admit(fleet, replace(MODEL, name=f"{prefix}-c"))
    _, trips["abandoned"] = measured(sent, lambda: fleet.abandoned(held))
    return trips


def test_admission_takes_two_round_trips_and_recording_one(counted: Fleets) -> None:
    fleet, sent = counted
    # Given: a worker that has run every step once (its connection is open, Redis has the scripts)
    every_step(fleet, sent, "warm")
    del sent[:]

    # When: three more calls go through every step
    trips = every_step(fleet, sent, "hot")

    # Then: budgets and limits are asked together, the breaker after; every record is one write
    assert trips == {
        "admit, rpm": 2,
        "admit, no rpm": 2,
        "succeeded": 1,
        "failed": 1,
        "abandoned": 1,
    }
    assert not [packet for packet in sent if b"SCRIPT" in packet.upper()]


def test_bookkeeping_applies_exactly_once_after_redis_lost_its_scripts(counted: Fleets) -> None:
    fleet, sent = counted
    held = admit(fleet)
    # Given: a server restarted without the scripts, then one of them loaded again by
    # another worker: in the next batch that script runs at once and the others are refused
    fleet.client.script_flush()
    fleet.breakers.record("other", ok=True, latency_s=0.1)

    # When: the call is recorded
    _, trips = measured(
        sent,
        lambda: fleet.succeeded(held, latency_s=0.4, tokens_in=300, tokens_out=100, cost_usd=0.002),
    )

    # Then: each component counted it once: none was lost, none sent again
    assert fleet.budgets.usage(job_id="job-1").spent_usd == pytest.approx(0.002)
    assert fleet.budgets.usage(job_id="job-1").reserved_usd == 0
    assert fleet.breakers.state("m").calls == 1
    assert fleet.latency.estimates({"m": 1.0})["m"].samples == 1
    assert fleet.limits.headroom("m", rpm=2, tpm=1_000) == {
        "requests": 1,
        "tokens": 600,
        "blocked_for_s": 0.0,
    }
    (row,) = fleet.ledger.rows(since_day=datetime.now(UTC).date())
    assert (row.requests, row.tokens_in, row.tokens_out) == (1, 300, 100)
    # The batch, then for each of the two refused scripts: EVALSHA, SCRIPT LOAD, EVALSHA.
    assert trips == 1 + 2 * 3


def test_admission_reserves_exactly_once_after_redis_lost_its_scripts(counted: Fleets) -> None:
    fleet, _ = counted
    fleet.client.script_flush()

    admit(fleet)

    assert fleet.budgets.usage(job_id="job-1").reserved_usd == pytest.approx(0.005)
    assert fleet.limits.headroom("m", rpm=2, tpm=10_000)["tokens"] == 8_000


def test_a_budget_refusal_gives_back_the_limit_slot_asked_beside_it(counted: Fleets) -> None:
    fleet, _ = counted

    with pytest.raises(BudgetExceeded, match=r"job job-1 budget \$0\.001"):
        admit(fleet, job_budget_usd=0.001)

    assert fleet.limits.headroom("m", rpm=2, tpm=None)["requests"] == 2
    assert fleet.budgets.usage(job_id="job-1").reserved_usd == 0
    assert fleet.breakers.state("m").state == "closed"


def test_a_latency_board_error_is_logged_and_the_rest_still_recorded(
    counted: Fleets, caplog: pytest.LogCaptureFixture
) -> None:
    fleet, _ = counted
    held = admit(fleet)
    fleet.client.set(fleet.latency.key("m"), "not a list")

    with caplog.at_level(logging.WARNING, logger="routing.latency"):
        fleet.succeeded(held, latency_s=0.4, tokens_in=10, tokens_out=0, cost_usd=0.001)

    assert "could not record m's latency" in caplog.text
    assert fleet.budgets.usage(job_id="job-1").spent_usd == pytest.approx(0.001)
    assert fleet.breakers.state("m").calls == 1


def test_a_failing_command_raises_once_the_others_are_recorded(counted: Fleets) -> None:
    fleet, _ = counted
    held = admit(fleet)
    fleet.client.set(fleet.breakers.key("m"), "not a hash")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        fleet.succeeded(held, latency_s=0.4, tokens_in=10, tokens_out=0, cost_usd=0.001)

    assert fleet.budgets.usage(job_id="job-1").spent_usd == pytest.approx(0.001)
    (row,) = fleet.ledger.rows(since_day=datetime.now(UTC).date())
    assert row.requests == 1


@pytest.mark.parametrize(
    ("threads", "cap", "connections"), [(1, None, 33), (256, None, 288), (500, 40, 40)]
)
def test_the_pool_is_one_per_thread_unless_capped(
    threads: int, cap: int | None, connections: int
) -> None:
    settings = Settings(
        broker_url="redis://unused",
        tier_concurrency=threads,
        router_concurrency=1,
        local_concurrency=1,
        redis_connections=cap,
    )

    assert pool_size(settings) == connections


def test_hundreds_of_threads_share_the_capped_pool(
    valkey: EmbeddedBroker, connect: Callable[[], redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    connect()  # an emptied server
    # Given: the fleet state of a 500-thread tier worker, counting the connections it opens
    settings = Settings(broker_url=valkey.url, tier_concurrency=500, redis_connections=40)
    fleet = Fleet.connect(settings)
    pool = fleet.client.connection_pool
    opened: list[object] = []
    make_connection = pool.make_connection

    def make() -> Any:
        opened.append(connection := make_connection())
        return connection

    monkeypatch.setattr(pool, "make_connection", make)
    free = replace(MODEL, rpm=None)
    start = threading.Barrier(200)
    errors: list[BaseException] = []

    def call(n: int) -> None:
        start.wait()
        try:
            held = admit(fleet, free, job=f"j{n}")
            fleet.succeeded(held, latency_s=0.1, tokens_in=10, tokens_out=5, cost_usd=0.0)
        except BaseException as exc:
            errors.append(exc)

    # When: 200 calls are admitted and recorded at the same moment
    threads = [threading.Thread(target=call, args=(n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # Then: they all went through on at most the pool's cap of connections
    try:
        assert errors == []
        assert fleet.breakers.state("m").calls == 200
        assert 0 < len(opened) <= pool_size(settings) == 40
    finally:
        fleet.close()
