"""A team's ``max_cost_usd``: checked before each fan-out, shared among members, never overshot.

Before a chord starts, every member's cheapest feasible worst case (prompt plus maximum output
on the cheapest eligible model) is added up, with the rounds still to come and a reserve for the
aggregator. If that does not fit in what remains of the budget, the fan-out is refused with
BudgetExceeded. Otherwise each member gets a share of what remains in proportion to its
cheapest cost. The router's ``max_cost_usd`` constraint bounds a member's worst case by its
share, so the team cannot spend more than its budget. The aggregator is then routed against
what is actually left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agents.job import Job
from agents.run import Runtime, cheapest_cost
from agents.team import first_jobs, member_job
from workers.errors import BudgetExceeded


def spent(results: Iterable[dict[str, Any] | None]) -> float:
    """What the given member, planner or aggregator results cost."""
    return sum(float(r.get("cost_usd", 0.0)) for r in results if r)


def share_budget(
    team_job: Job,
    members: Sequence[Job],
    *,
    aggregator: str,
    already_spent: float,
    rounds_after: int = 0,
    runtime: Runtime,
) -> list[Job]:
    """``members`` with their share of the team's remaining budget; raises BudgetExceeded."""
    budget = team_job.max_cost_usd
    if budget is None:
        return list(members)
    remaining = budget - already_spent
    cheapest = [floor_cost(member, runtime) for member in members]
    need = sum(cheapest) * (1 + rounds_after) + _aggregator_reserve(
        team_job, members, aggregator=aggregator, runtime=runtime
    )
    if need > remaining:
        msg = (
            f"team {team_job.team}: max_cost_usd={budget} leaves ${remaining:.6f}, but the "
            f"cheapest plan for {len(members)} members and the aggregator could cost up to "
            f"${need:.6f}"
        )
        raise BudgetExceeded(msg)
    scale = remaining / need
    return [
        member.model_copy(update={"max_cost_usd": cost * scale})
        for member, cost in zip(members, cheapest, strict=True)
    ]


def floor_cost(job: Job, runtime: Runtime) -> float:
    """The least ``job`` could cost at its worst case: one call for an agent; for a (nested)
    team, its first members, its rounds still to come and its aggregator."""
    if job.team is None:
        return cheapest_cost(job, runtime)
    team = runtime.agents.get_team(job.team)
    members = first_jobs(team, job)
    rounds = team.rounds if team.pattern == "debate" else 0
    members_cost = sum(floor_cost(member, runtime) for member in members) * (1 + rounds)
    return members_cost + _aggregator_reserve(
        job, members, aggregator=team.aggregator, runtime=runtime
    )


def aggregator_budget(team_job: Job, *, already_spent: float) -> float | None:
    """What the aggregator may cost: what remains; raises BudgetExceeded if nothing does."""
    if team_job.max_cost_usd is None:
        return None
    remaining = team_job.max_cost_usd - already_spent
    if remaining <= 0:
        msg = f"team {team_job.team}: max_cost_usd={team_job.max_cost_usd} is spent"
        raise BudgetExceeded(msg)
    return remaining


def _aggregator_reserve(
    team_job: Job, members: Sequence[Job], *, aggregator: str, runtime: Runtime
) -> float:
    # The aggregator reads every member's answer: estimate its prompt from their expected
    # output lengths (one filler word is one token).
    expected = sum(_expected_output_tokens(m, runtime) for m in members)
    stand_in = member_job(
        team_job, agent=aggregator, text=team_job.input + " word" * expected, index=-1,
        bound=False,
    )  # fmt: skip
    return cheapest_cost(stand_in, runtime)


def _expected_output_tokens(job: Job, runtime: Runtime) -> int:
    # A nested team answers with its aggregator's words.
    agent = runtime.agents.get_team(job.team).aggregator if job.team else job.target
    return runtime.agents.get(agent).expected_output_tokens
