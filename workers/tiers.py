"""The vocabulary every layer shares: tiers, their queues, task names and task kinds."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

ROUTER_QUEUE = "router"
# A job's "high" complexity (agents.job), and where the router stops trusting a model whose
# quality nobody measured (routing.constraints).
HIGH_COMPLEXITY = 0.85
ROUTE_TASK = "chordal.route"
AGENT_TASK = "chordal.agent"
CLASSIFIED_TASK = "chordal.route.classified"
TEAM_FANOUT_TASK = "chordal.team.fanout"
TEAM_AGGREGATE_TASK = "chordal.team.aggregate"
TEAM_ROUND_TASK = "chordal.team.round"
TEAM_FINALIZE_TASK = "chordal.team.finalize"
TEAM_TASKS = (TEAM_FANOUT_TASK, TEAM_AGGREGATE_TASK, TEAM_ROUND_TASK, TEAM_FINALIZE_TASK)
ROUTER_TASKS = (ROUTE_TASK, CLASSIFIED_TASK, *TEAM_TASKS)

TaskKind = Literal["general", "coding", "extraction"]
TASK_KINDS: tuple[TaskKind, ...] = ("general", "coding", "extraction")


class Tier(StrEnum):
    """A worker pool per tier, each scaled on its own queue depth.

    ``fast``, ``balanced`` and ``premium`` hold the providers' models, placed by their quality.
    ``local`` holds models served on the operator's own machines (llama.cpp, vLLM, Ollama): it
    exists only where the local tier is turned on (``CHORDAL_LOCAL_MODEL``), and is placed by
    where the model runs, not by its quality.
    """

    FAST = "fast"
    BALANCED = "balanced"
    PREMIUM = "premium"
    LOCAL = "local"

    @property
    def queue(self) -> str:
        """The Celery queue this tier's workers consume."""
        return f"tier.{self.value}"


# The tiers every deployment has, weakest first; a model's quality decides which it is in.
QUALITY_TIERS = (Tier.FAST, Tier.BALANCED, Tier.PREMIUM)
ALL_QUEUES = (ROUTER_QUEUE, *(tier.queue for tier in Tier))


def transport_priority(priority: int, *, broker_url: str) -> int:
    """Map Chordal's priority (9 = most urgent) onto the broker's own scale.

    RabbitMQ treats higher numbers as more urgent; kombu's Redis transport serves 0 first.
    """
    redis_like = broker_url.split("://", 1)[0] in {"redis", "rediss", "sentinel", "valkey"}
    return 9 - priority if redis_like else priority
