"""Tiers, their queues and the broker's priority scale."""

from __future__ import annotations

import pytest

from workers.tiers import ALL_QUEUES, QUALITY_TIERS, ROUTER_QUEUE, Tier, transport_priority


@pytest.mark.parametrize(
    ("tier", "queue"),
    [
        (Tier.FAST, "tier.fast"),
        (Tier.BALANCED, "tier.balanced"),
        (Tier.PREMIUM, "tier.premium"),
        (Tier.LOCAL, "tier.local"),
    ],
)
def test_each_tier_has_its_own_queue(tier: Tier, queue: str) -> None:
    assert tier.queue == queue


def test_all_queues_are_the_router_then_every_tier() -> None:
    assert ALL_QUEUES == ("router", "tier.fast", "tier.balanced", "tier.premium", "tier.local")
    assert ALL_QUEUES[0] == ROUTER_QUEUE
    assert len(set(ALL_QUEUES)) == len(ALL_QUEUES)


def test_quality_tiers_are_every_tier_but_local_weakest_first() -> None:
    assert QUALITY_TIERS == (Tier.FAST, Tier.BALANCED, Tier.PREMIUM)
    assert set(Tier) - set(QUALITY_TIERS) == {Tier.LOCAL}


def test_tier_reads_from_its_string_value() -> None:
    assert Tier("premium") is Tier.PREMIUM


@pytest.mark.parametrize("broker", ["redis://localhost:6379/0", "rediss://cache:6380/0"])
@pytest.mark.parametrize(("priority", "expected"), [(9, 0), (5, 4), (0, 9)])
def test_redis_serves_zero_first_so_priority_is_inverted(
    broker: str, priority: int, expected: int
) -> None:
    assert transport_priority(priority, broker_url=broker) == expected


@pytest.mark.parametrize(
    "broker", ["amqp://guest@localhost:5672//", "amqps://rabbit:5671//", "pyamqp://rabbit//"]
)
@pytest.mark.parametrize("priority", [9, 5, 0])
def test_rabbitmq_priority_is_unchanged(broker: str, priority: int) -> None:
    assert transport_priority(priority, broker_url=broker) == priority


def test_most_urgent_job_gets_the_broker_most_urgent_value() -> None:
    # Redis: lower is served first; RabbitMQ: higher is served first.
    redis = "redis://localhost/0"
    amqp = "amqp://localhost//"
    assert transport_priority(9, broker_url=redis) < transport_priority(1, broker_url=redis)
    assert transport_priority(9, broker_url=amqp) > transport_priority(1, broker_url=amqp)
