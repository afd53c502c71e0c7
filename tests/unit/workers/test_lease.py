"""Execution leases (``workers.lease``) against a real Valkey."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from workers.cancellation import cancel_key
from workers.lease import DONE, Leases, Verdict, run_key


def test_a_second_copy_is_busy_while_the_first_runs_and_dropped_once_it_finished(
    connect: Callable[[], redis.Redis],
) -> None:
    # Given: two worker processes' leases over one Redis
    first, second = (Leases(connect(), ttl_s=5, done_ttl_s=60) for _ in range(2))
    key = run_key("job-1", "chordal.agent", 1)

    # When/Then: the first copy runs, the second is told to wait
    assert first.acquire(key) is Verdict.RUN
    assert second.acquire(key) is Verdict.BUSY
    # ... and once the first finished, a later copy is dropped
    first.finish(key, drop=["chordal:answer:job-1:1"])
    assert second.acquire(key) is Verdict.DONE
    assert connect().get(key) == DONE.encode()
    assert first.held() == []


def test_links_of_one_task_id_have_leases_of_their_own(connect: Callable[[], redis.Redis]) -> None:
    leases = Leases(connect(), ttl_s=5, done_ttl_s=60)
    # The router (nesting 0) and the agent task it handed the job to (nesting 1) share an id.
    assert leases.acquire(run_key("job-2", "chordal.route", 0)) is Verdict.RUN
    assert leases.acquire(run_key("job-2", "chordal.agent", 1)) is Verdict.RUN


def test_a_lease_lapses_unless_renewed(connect: Callable[[], redis.Redis]) -> None:
    # Given: a lease of 300 ms, and another process's copy waiting
    holder, other = Leases(connect(), ttl_s=0.3, done_ttl_s=60), Leases(connect(), ttl_s=0.3,
                                                                        done_ttl_s=60)  # fmt: skip
    renewed, lapsed = run_key("renewed", "t"), run_key("lapsed", "t")
    holder.acquire(renewed)
    other.acquire(lapsed)
    other._forget(lapsed)  # its worker died: nobody renews it any more

    # When: the holder's heartbeat renews for 0.6 s
    for _ in range(4):
        time.sleep(0.15)
        assert holder.renew() == 1

    # Then: the renewed lease still keeps copies out; the dead worker's has lapsed
    assert other.acquire(renewed) is Verdict.BUSY
    assert holder.acquire(lapsed) is Verdict.RUN


def test_a_released_lease_lets_the_next_copy_run_at_once(
    connect: Callable[[], redis.Redis],
) -> None:
    first, second = (Leases(connect(), ttl_s=30, done_ttl_s=60) for _ in range(2))
    key = run_key("job-3", "chordal.agent", 1)
    first.acquire(key)
    first.release(key)
    assert second.acquire(key) is Verdict.RUN
    # Releasing what another copy now holds takes nothing from it.
    first.release(key)
    assert first.acquire(key) is Verdict.BUSY


def test_a_lease_whose_done_write_fails_is_no_longer_renewed(
    connect: Callable[[], redis.Redis],
) -> None:
    client = connect()
    leases = Leases(client, ttl_s=30, done_ttl_s=60)
    key = run_key("job-4", "t")
    leases.acquire(key)
    broken = Leases(redis.Redis(port=1, socket_connect_timeout=0.2), ttl_s=30, done_ttl_s=60)
    broken._held[key] = "token"
    with pytest.raises(redis.ConnectionError):
        broken.finish(key)
    assert broken.held() == []


def test_a_cancelled_job_takes_no_lease(connect: Callable[[], redis.Redis]) -> None:
    # Given: one job cancelled, one not
    client = connect()
    leases = Leases(client, ttl_s=5, done_ttl_s=60)
    client.set(cancel_key("job-cancelled"), 1)
    cancelled, running = run_key("job-cancelled", "t"), run_key("job-running", "t")

    # When: each copy asks for its lease, unless its job was cancelled (one round trip)
    verdicts = [
        leases.acquire(cancelled, unless=cancel_key("job-cancelled")),
        leases.acquire(running, unless=cancel_key("job-running")),
    ]

    # Then: the cancelled one is told so and holds nothing; the other runs
    assert verdicts == [Verdict.CANCELLED, Verdict.RUN]
    assert client.get(cancelled) is None
    assert leases.held() == [running]
