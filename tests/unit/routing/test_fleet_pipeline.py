"""How many Redis round trips the fleet makes around a call, and that batching them never
applies a command twice or leaves one out, against a real Valkey."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from chordal.broker import EmbeddedBroker
from routing.budgets import Usage
from routing.catalog import Model
from routing.fleet import Fleet, pool_size
from tests.support import FLEET_CALL as CALL
from tests.support import FLEET_MODEL as MODEL
from workers.errors import BudgetExceeded, InvalidOutput, ProviderTimeout, RateLimited
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
    """Round trips of each step of four calls: answered, failed, timed out, never sent."""
    limited = replace(MODEL, name=f"{prefix}-a", deployment_id=f"{prefix}-a")
    free = replace(MODEL, name=f"{prefix}-b", deployment_id=f"{prefix}-b", rpm=None)
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
    held = admit(fleet, replace(MODEL, name=f"{prefix}-c", deployment_id=f"{prefix}-c"))
    _, trips["uncertain"] = measured(
        sent, lambda: fleet.uncertain(held, ProviderTimeout("slow"), latency_s=30.0)
    )
    held = admit(fleet, replace(MODEL, name=f"{prefix}-d", deployment_id=f"{prefix}-d"))
    _, trips["abandoned"] = measured(sent, lambda: fleet.abandoned(held))
    return trips


def test_admission_takes_two_round_trips_and_recording_one(counted: Fleets) -> None:
    fleet, sent = counted
    # Given: a worker that has run every step once (its connection is open, Redis has the scripts)
    every_step(fleet, sent, "warm")
    del sent[:]

    # When: four more calls go through every step
    trips = every_step(fleet, sent, "hot")

    # Then: budgets and limits are asked together, the breaker after; every record is one write
    assert trips == {
        "admit, rpm": 2,
        "admit, no rpm": 2,
        "succeeded": 1,
        "failed": 1,
        "uncertain": 1,
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
    # The batch, then one more: SCRIPT LOAD for each refused script, and EVALSHA for each again.
    assert trips == 2


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


class LosesReplies(redis.Redis):
    """A client whose next ``lose`` pipelines run on the server, then time out on the way back:
    what a worker sees when Redis answered but the reply was lost."""

    lose = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        run = pipe.execute

        def execute(raise_on_error: bool = True) -> list[Any]:
            replies = run(raise_on_error)
            if self.lose:
                self.lose -= 1
                raise redis.TimeoutError("Timeout reading from socket")
            return replies

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


def lossy_fleet(valkey: EmbeddedBroker) -> tuple[Fleet, LosesReplies]:
    client = LosesReplies.from_url(valkey.url)
    return Fleet(client, Settings(broker_url="redis://unused", redis_retry_s=5)), client


OUTCOMES: dict[str, Callable[[Fleet, Any], None]] = {
    "answered": lambda fleet, held: fleet.succeeded(
        held, latency_s=0.4, tokens_in=300, tokens_out=100, cost_usd=0.002
    ),
    "billed, invalid": lambda fleet, held: fleet.failed(
        held, InvalidOutput("not JSON"), latency_s=0.4, cost_usd=0.002
    ),
    "uncertain": lambda fleet, held: fleet.uncertain(held, ProviderTimeout("slow"), latency_s=30.0),
}


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_a_retry_after_a_lost_reply_charges_once(
    valkey: EmbeddedBroker,
    connect: Callable[[], redis.Redis],
    caplog: pytest.LogCaptureFixture,
    outcome: str,
) -> None:
    connect()  # an emptied server
    fleet, client = lossy_fleet(valkey)
    held = admit(fleet, replace(MODEL, tpm=10_000))
    # Given: a Redis that will run the recording, and then lose its reply
    client.lose = 1

    # When: the outcome is recorded (it retries the timeout)
    with caplog.at_level(logging.WARNING, logger="workers.redis_retry"):
        OUTCOMES[outcome](fleet, held)

    # Then: it was sent twice, yet the budget and the ledger charged it once
    assert f"recording m's call {held.id}" in caplog.text
    charged = 0.005 if outcome == "uncertain" else 0.002
    assert fleet.budgets.usage(job_id="job-1") == Usage(spent_usd=charged, reserved_usd=0)
    (row,) = fleet.ledger.rows(since_day=datetime.now(UTC).date())
    assert (row.requests, row.cost_usd) == (1, pytest.approx(charged))
    # The limit's tokens were set, not added to: 400 used, 0 used, or the 2,000 reserved kept.
    tokens = {"answered": 400, "billed, invalid": 0, "uncertain": 2_000}[outcome]
    assert fleet.limits.headroom("m", rpm=2, tpm=10_000)["tokens"] == 10_000 - tokens
    client.close()


def test_giving_back_after_a_lost_reply_gives_back_once(
    valkey: EmbeddedBroker, connect: Callable[[], redis.Redis]
) -> None:
    connect()
    fleet, client = lossy_fleet(valkey)
    first, second = admit(fleet, job="job-1"), admit(fleet, job="job-2")
    client.lose = 1

    fleet.abandoned(first)

    # The other call's reservation and limit slot are untouched by the repeat
    assert fleet.budgets.usage(job_id="job-1") == Usage(spent_usd=0, reserved_usd=0)
    assert fleet.budgets.usage(tenant="acme").reserved_usd == pytest.approx(0.005)
    assert fleet.limits.headroom("m", rpm=2, tpm=None)["requests"] == 1
    fleet.succeeded(second, latency_s=0.1, tokens_in=1, tokens_out=1, cost_usd=0.001)
    client.close()


def test_recording_waits_out_a_paused_redis_and_counts_once(
    valkey: EmbeddedBroker, connect: Callable[[], redis.Redis]
) -> None:
    admin = connect()  # an emptied server
    client = redis.Redis.from_url(valkey.url, socket_timeout=0.2)
    fleet = Fleet(client, Settings(broker_url="redis://unused", redis_retry_s=10))
    held = admit(fleet)
    # Given: Redis holds every command for 1.5 s, and the client gives up on a reply in 0.2 s
    admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")

    # When: the call is recorded while it is paused
    started = time.monotonic()
    fleet.succeeded(held, latency_s=0.4, tokens_in=300, tokens_out=100, cost_usd=0.002)

    # Then: recording waited for it, and the budget and the ledger counted the call once
    assert time.monotonic() - started >= 1.0
    assert fleet.budgets.usage(job_id="job-1") == Usage(spent_usd=0.002, reserved_usd=0)
    (row,) = fleet.ledger.rows(since_day=datetime.now(UTC).date())
    assert (row.requests, row.cost_usd) == (1, pytest.approx(0.002))
    client.close()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A Valkey of this test's own, which it may kill and restart."""
    broker = EmbeddedBroker(tmp_path).start()
    yield broker
    broker.stop()


def test_recording_survives_a_redis_restart(own_broker: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(own_broker.url)
    fleet = Fleet(client, Settings(broker_url="redis://unused", redis_retry_s=20))
    held = admit(fleet)
    # Given: Redis crashes after the admission, and comes back (without its scripts) in 1 s
    own_broker.kill()
    restart = threading.Timer(1.0, own_broker.start)
    restart.start()

    # When: the call is recorded meanwhile
    try:
        fleet.succeeded(held, latency_s=0.4, tokens_in=300, tokens_out=100, cost_usd=0.002)
    finally:
        restart.join()

    # Then: it was recorded once, on the restarted server
    assert fleet.budgets.usage(job_id="job-1") == Usage(spent_usd=0.002, reserved_usd=0)
    assert fleet.breakers.state("m").calls == 1
    (row,) = fleet.ledger.rows(since_day=datetime.now(UTC).date())
    assert row.requests == 1
    client.close()


def test_recording_gives_up_when_redis_stays_down(own_broker: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(own_broker.url)
    fleet = Fleet(client, Settings(broker_url="redis://unused", redis_retry_s=0.5))
    held = admit(fleet)
    own_broker.kill()

    started = time.monotonic()
    with pytest.raises(redis.ConnectionError) as caught:
        fleet.succeeded(held, latency_s=0.4, tokens_in=300, tokens_out=100, cost_usd=0.002)

    assert 0.5 <= time.monotonic() - started < 3
    assert f"recording m's call {held.id}: gave up after" in "".join(caught.value.__notes__)
    client.close()
