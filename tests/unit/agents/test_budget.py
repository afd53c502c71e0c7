"""A team's budget: refused up front when the cheapest plan cannot fit, else shared out."""

from __future__ import annotations

import pytest

from agents.budget import aggregator_budget, share_budget, spent
from agents.job import Job
from agents.run import Runtime, cheapest_cost
from workers.errors import BudgetExceeded
from workers.settings import Settings


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime.load(Settings(broker_url="redis://unused"))


def members(n: int) -> list[Job]:
    return [Job(agent="summarizer", input=f"chunk {i} " * 50) for i in range(n)]


def test_without_a_budget_members_are_unchanged(runtime: Runtime) -> None:
    team = Job(team="digest", input="x")

    shared = share_budget(team, members(3), aggregator="writer", already_spent=0, runtime=runtime)

    assert [m.max_cost_usd for m in shared] == [None, None, None]


def test_each_member_gets_at_least_its_cheapest_and_the_total_leaves_the_aggregator_room(
    runtime: Runtime,
) -> None:
    team = Job(team="digest", input="x", max_cost_usd=0.05)

    shared = share_budget(
        team, members(4), aggregator="writer", already_spent=0.01, runtime=runtime
    )

    cheapest = [cheapest_cost(m, runtime) for m in members(4)]
    shares = [m.max_cost_usd or 0 for m in shared]
    assert all(share >= cost for share, cost in zip(shares, cheapest, strict=True))
    assert sum(shares) < 0.05 - 0.01


def test_plan_that_cannot_fit_is_refused_naming_the_budget(runtime: Runtime) -> None:
    team = Job(team="digest", input="x", max_cost_usd=1e-5)

    with pytest.raises(BudgetExceeded, match=r"max_cost_usd=1e-05 leaves \$0\.000010"):
        share_budget(team, members(20), aggregator="writer", already_spent=0, runtime=runtime)


def test_later_rounds_are_reserved_up_front(runtime: Runtime) -> None:
    one_round = members(2)
    need = sum(cheapest_cost(m, runtime) for m in one_round)
    team = Job(team="debate", input="x", max_cost_usd=need * 2)

    share_budget(team, one_round, aggregator="summarizer", already_spent=0, runtime=runtime)
    with pytest.raises(BudgetExceeded):
        share_budget(
            team, one_round, aggregator="summarizer", already_spent=0, rounds_after=3,
            runtime=runtime,
        )  # fmt: skip


def test_aggregator_gets_what_remains() -> None:
    team = Job(team="digest", input="x", max_cost_usd=0.01)

    assert aggregator_budget(team, already_spent=0.004) == pytest.approx(0.006)
    assert aggregator_budget(Job(team="digest", input="x"), already_spent=1.0) is None
    with pytest.raises(BudgetExceeded, match="is spent"):
        aggregator_budget(team, already_spent=0.01)


def test_spent_adds_up_results_and_skips_missing_ones() -> None:
    assert spent([{"cost_usd": 0.25}, None, {"status": "failed"}, {"cost_usd": 0.5}]) == 0.75


def test_a_nested_teams_floor_covers_its_members_and_aggregator(runtime: Runtime) -> None:
    from agents.budget import floor_cost
    from agents.team import first_jobs

    # Given: the built-in research team (three members and a writer) as one member
    team = runtime.agents.get_team("research")
    job = Job(team="research", input="What is a chord? " * 20)

    # When
    floor = floor_cost(job, runtime)

    # Then: more than its members' cheapest calls, by the aggregator's reserve
    members = sum(cheapest_cost(m, runtime) for m in first_jobs(team, job))
    assert floor > members > 0
    assert floor_cost(Job(agent="writer", input="x"), runtime) == cheapest_cost(
        Job(agent="writer", input="x"), runtime
    )
