"""Live latency per model: recorded by workers in Redis, read as p50/p95 by the router."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from itertools import count
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chordal.broker import EmbeddedBroker, free_port
from routing.latency import LatencyBoard, LatencyEstimate, percentile


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class CountingConnection(redis.Connection):
    """A Redis connection that counts what it sends: one packet per command or pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


MakeBoard = Callable[..., LatencyBoard]


@pytest.fixture
def make_board(valkey: EmbeddedBroker) -> Iterator[MakeBoard]:
    """Boards over a fresh key prefix each; their clients are closed on teardown."""
    clients: list[redis.Redis] = []
    prefixes = count()

    def make(**options: Any) -> LatencyBoard:
        pool = redis.ConnectionPool.from_url(valkey.url, connection_class=CountingConnection)
        client = redis.Redis.from_pool(pool)
        clients.append(client)
        # A fresh prefix per board: id() of a freed list comes back in a later test.
        options.setdefault("prefix", f"test:{uuid.uuid4().hex}:{next(prefixes)}:")
        return LatencyBoard(client, **options)

    yield make
    for client in clients:
        client.close()


def test_seeds_from_catalog_until_enough_samples(make_board: MakeBoard) -> None:
    board = make_board(min_samples=5, cache_s=0)
    assert board.estimates({"m": 2.0}) == {"m": LatencyEstimate(2.0, 2.0, 0, "catalog")}

    for _ in range(4):
        board.record("m", 0.1)
    assert board.estimates({"m": 2.0})["m"] == LatencyEstimate(2.0, 2.0, 4, "catalog")

    board.record("m", 0.1)
    assert board.estimates({"m": 2.0})["m"] == LatencyEstimate(0.1, 0.1, 5, "live")


def test_p50_and_p95_over_the_samples(make_board: MakeBoard) -> None:
    board = make_board(cache_s=0)
    for seconds in range(1, 21):
        board.record("m", float(seconds))

    estimate = board.estimates({"m": 9.0})["m"]

    assert estimate.source == "live"
    assert estimate.samples == 20
    assert estimate.p50 == pytest.approx(10.5)
    assert estimate.p95 == pytest.approx(19.05)


def test_keeps_only_the_last_window_samples(make_board: MakeBoard, valkey: EmbeddedBroker) -> None:
    board = make_board(window=10, cache_s=0)
    for seconds in range(100):
        board.record("m", float(seconds))

    estimate = board.estimates({"m": 1.0})["m"]

    assert estimate.samples == 10
    assert estimate.p50 == pytest.approx(94.5)
    with redis.Redis.from_url(valkey.url) as client:
        assert client.llen(board.key("m")) == 10


def test_follows_a_latency_change_within_tens_of_calls(make_board: MakeBoard) -> None:
    # Given a model settled at 50 ms
    board = make_board(cache_s=0)
    for _ in range(50):
        board.record("m", 0.05)
    # When it slows to 500 ms, the p95 follows within 4 calls and the p50 within 26
    for _ in range(4):
        board.record("m", 0.5)
    assert board.estimates({"m": 1.0})["m"].p95 == pytest.approx(0.5)
    for _ in range(22):
        board.record("m", 0.5)
    assert board.estimates({"m": 1.0})["m"].p50 == pytest.approx(0.5)
    # And when it recovers, the estimates come back down just as fast
    for _ in range(26):
        board.record("m", 0.05)
    assert board.estimates({"m": 1.0})["m"].p50 == pytest.approx(0.05)


def test_reads_many_models_in_one_round_trip(make_board: MakeBoard) -> None:
    board = make_board(cache_s=0, min_samples=1)
    for index in range(8):
        board.record(f"m{index}", index / 10)
    CountingConnection.sent = 0

    estimates = board.estimates({f"m{index}": 1.0 for index in range(10)})

    assert CountingConnection.sent == 1
    assert estimates["m3"] == LatencyEstimate(0.3, 0.3, 1, "live")
    assert estimates["m9"] == LatencyEstimate(1.0, 1.0, 0, "catalog")


def test_caches_reads_for_cache_s(make_board: MakeBoard) -> None:
    clock = FakeClock()
    board = make_board(cache_s=1.0, min_samples=1, clock=clock)
    board.record("a", 0.2)
    assert board.estimates({"a": 1.0})["a"].p50 == pytest.approx(0.2)

    # Within cache_s, the router does not touch Redis, even for a new sample
    clock.now += 0.5
    board.record("a", 0.4)
    reads_before = CountingConnection.sent
    assert board.estimates({"a": 1.0})["a"].samples == 1
    assert CountingConnection.sent == reads_before

    # Past cache_s, it reads again; a model not cached yet is read alone
    clock.now += 0.6
    assert board.estimates({"a": 1.0})["a"].samples == 2
    assert board.estimates({"a": 1.0, "b": 3.0})["b"].source == "catalog"
    assert CountingConnection.sent == reads_before + 2


def test_ignores_samples_older_than_max_age(make_board: MakeBoard) -> None:
    # Given a model that was slow, then not chosen for a while
    clock = FakeClock()
    board = make_board(cache_s=0, max_age_s=60, min_samples=1, clock=clock)
    board.record("m", 9.0)
    assert board.estimates({"m": 1.0})["m"].source == "live"
    # When its samples grow older than max_age_s, the catalog figure comes back
    clock.now += 61
    assert board.estimates({"m": 1.0})["m"] == LatencyEstimate(1.0, 1.0, 0, "catalog")


def test_idle_keys_expire(make_board: MakeBoard, valkey: EmbeddedBroker) -> None:
    board = make_board(max_age_s=120)
    board.record("m", 1.0)
    with redis.Redis.from_url(valkey.url) as client:
        assert 0 < client.ttl(board.key("m")) <= 120


def test_redis_down_falls_back_to_catalog_and_never_raises() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    board = LatencyBoard(client)
    try:
        board.record("m", 0.3)
        assert board.estimates({"m": 1.5}) == {"m": LatencyEstimate(1.5, 1.5, 0, "catalog")}
    finally:
        client.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 0}, "window"),
        ({"min_samples": 0}, "min_samples"),
        ({"window": 5, "min_samples": 6}, "min_samples"),
        ({"max_age_s": 0}, "max_age_s"),
        ({"cache_s": -1}, "cache_s"),
    ],
)
def test_rejects_bad_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LatencyBoard(redis.Redis(), **options)


@pytest.mark.parametrize("seconds", [-0.1, math.nan, math.inf])
def test_rejects_impossible_latencies(seconds: float) -> None:
    board = LatencyBoard(redis.Redis())
    with pytest.raises(ValueError, match="latency"):
        board.record("m", seconds)


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0], 1.0) == 2.0
