"""The quality-aware cascade (FrugalGPT): a cheap model first, a strong one only when needed.

A job (or team member) with ``cascade`` set is routed to the cheapest adequate model, with the
strongest affordable one kept in ``decision.cascade``. Its answer is checked -- ``schema``: the
structured output must validate; ``critic``: that, and the ``critic`` agent, on a cheap model,
must accept it -- and only a failed check escalates the job to the strong model. The result's
:class:`~agents.result.CascadeReport` says what the cascade cost against what the strong model
alone would have (the strong model's price for the same tokens when the cheap answer was kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.answers import CRITIC_CALL
from agents.calls import Outcome, call_model
from agents.job import Job
from agents.result import CascadeReport
from agents.run import Runtime, live_plan
from routing.llm import Completion, price
from workers.errors import ChordalError

CRITIC = "critic"


@dataclass(frozen=True)
class Verdict:
    """Whether a cheap answer stands, why not, and what checking it cost."""

    passed: bool
    reason: str | None
    cost_usd: float


def check(
    job: Job,
    outcome: Outcome,
    *,
    job_id: str,
    budget_id: str,
    runtime: Runtime,
    attempt: str | None = None,
    recall_first: bool = False,
) -> Verdict:
    """Check a cascade's cheap answer the way the job asked (``schema`` or ``critic``);
    the critic's call counts as ``attempt`` + ``:critic``."""
    if outcome.invalid is not None:
        return Verdict(passed=False, reason=f"invalid output: {outcome.invalid}", cost_usd=0.0)
    if job.cascade != "critic":
        return Verdict(passed=True, reason=None, cost_usd=0.0)
    review = Job(
        agent=CRITIC,
        input=(
            f"Task: {job.input}\n\nAnswer to review:\n{outcome.completion.content}\n\n"
            "Accept the answer if it is correct and complete; otherwise ask for a revision."
        ),
        complexity=0.2,
        tenant=job.tenant,
        deadline_at=job.deadline_at,
        metadata={**job.metadata, "cascade_review": True},
    )
    try:
        decision = live_plan(review, runtime, budget_id=budget_id)
        critic_attempt = None if attempt is None else f"{attempt}:{CRITIC_CALL}"
        verdict = call_model(
            review, job_id=job_id, budget_id=budget_id, decision=decision, runtime=runtime,
            attempt=critic_attempt, recall_first=recall_first,
        )  # fmt: skip
    except ChordalError as exc:
        # An answer nobody could check is not trusted: escalate.
        return Verdict(passed=False, reason=f"the critic could not review it: {exc}", cost_usd=0.0)
    cost = verdict.completion.cost_usd
    said: dict[str, Any] = verdict.structured or {}
    if verdict.invalid is None and said.get("verdict") == "accept":
        return Verdict(passed=True, reason=None, cost_usd=cost)
    issues = "; ".join(str(issue) for issue in said.get("issues") or []) or "no reason given"
    return Verdict(passed=False, reason=f"the critic asked for a revision: {issues}", cost_usd=cost)


def kept(
    *,
    first_model: str,
    strong_model: str,
    completion: Completion,
    cost_usd: float,
    runtime: Runtime,
) -> CascadeReport:
    """The report for a cheap answer that passed its check."""
    strong_only = price(
        runtime.catalog.get(strong_model),
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
    return CascadeReport(
        first_model=first_model,
        strong_model=strong_model,
        escalated=False,
        cost_usd=cost_usd,
        strong_only_usd=strong_only,
        saved_usd=strong_only - cost_usd,
    )


def escalated(state: dict[str, Any], *, completion: Completion, cost_usd: float) -> CascadeReport:
    """The report for a job the cascade escalated; ``state`` is what the first step passed on."""
    return CascadeReport(
        first_model=str(state["first_model"]),
        strong_model=str(state["strong_model"]),
        escalated=True,
        reason=state.get("reason"),
        cost_usd=cost_usd,
        strong_only_usd=completion.cost_usd,
        saved_usd=completion.cost_usd - cost_usd,
    )
