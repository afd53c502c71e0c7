"""The complexity heuristic behind ``complexity: auto``."""

from __future__ import annotations

from routing.complexity import CEILING, FLOOR, estimate_complexity


def test_a_short_lookup_is_simple() -> None:
    assert estimate_complexity("Translate 'hello' into French.") <= 0.2


def test_reasoning_and_code_raise_the_estimate() -> None:
    plain = estimate_complexity("Tell me about queues.")
    hard = estimate_complexity(
        "Why does this deadlock? Analyze the trade-offs and design a fix, step by step:\n"
        "```python\ndef worker():\n    lock.acquire()\n```"
    )
    assert hard > plain + 0.3


def test_longer_tasks_weigh_more() -> None:
    short = estimate_complexity("Compare Redis and RabbitMQ.")
    long = estimate_complexity("Compare Redis and RabbitMQ. " + "Consider durability. " * 300)
    assert long > short


def test_the_estimate_stays_in_bounds() -> None:
    assert estimate_complexity("") == FLOOR
    extreme = "Why? Prove, derive, analyze, design, optimize, debug. " * 500 + "```x```"
    assert estimate_complexity(extreme) == CEILING
