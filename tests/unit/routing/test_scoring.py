"""Choosing a deployment: hard constraints, then the quality/cost/latency score."""

from __future__ import annotations

import os

import pytest

from agents.job import Job
from agents.run import Runtime, plan
from routing.catalog import Catalog, Model
from routing.scoring import CANDIDATES_KEPT, RouteRequest, choose
from workers.errors import NoEligibleModel
from workers.settings import Settings
from workers.tiers import Tier


@pytest.fixture
def make_model():
    """A Model with sensible defaults; override any field by keyword."""

    def make(name: str, *, quality: float | dict = 0.5, **fields) -> Model:
        values = {
            "tier": Tier.FAST,
            "litellm_params": {"model": f"openai/{name}"},
            "price_model": name,
            "input_cost_per_token": 1e-6,
            "output_cost_per_token": 4e-6,
            "context_window": 100_000,
            "max_output_tokens": 8_192,
            "expected_latency_s": 1.0,
        }
        values.update(fields)
        by_kind = quality if isinstance(quality, dict) else {"general": quality}
        return Model(name=name, quality_by_kind=by_kind, **values)

    return make


@pytest.fixture
def make_catalog(make_model):
    """A Catalog of three tiers: cheap and weak, middling, dear and strong (or given models)."""

    def make(*models: Model) -> Catalog:
        if not models:
            models = (
                make_model("cheap", tier=Tier.FAST, quality=0.60, input_cost_per_token=1e-7,
                           output_cost_per_token=4e-7, expected_latency_s=0.8),
                make_model("mid", tier=Tier.BALANCED, quality=0.80, input_cost_per_token=1e-6,
                           output_cost_per_token=4e-6, expected_latency_s=1.5,
                           context_window=200_000),
                make_model("top", tier=Tier.PREMIUM, quality=0.97, input_cost_per_token=1e-5,
                           output_cost_per_token=4e-5, expected_latency_s=3.0,
                           context_window=1_000_000, max_output_tokens=2_048),
            )  # fmt: skip
        return Catalog(models=tuple(models), profile="offline")

    return make


def request(**fields) -> RouteRequest:
    values = {"prompt_tokens": 1_000, "max_output_tokens": 1_000, "expected_output_tokens": 100}
    values.update(fields)
    return RouteRequest(**values)


def test_simple_job_goes_to_the_cheapest_model(make_catalog) -> None:
    decision = choose(request(complexity=0.1), make_catalog())

    assert decision.model == "cheap"
    assert decision.tier is Tier.FAST


def free_model(make_model, quality: float, latency: float) -> Model:
    """A local-tier model at no charge."""
    return make_model(
        "free", tier=Tier.LOCAL, quality=quality, input_cost_per_token=0.0,
        output_cost_per_token=0.0, expected_latency_s=latency,
    )  # fmt: skip


@pytest.mark.parametrize("complexity", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_a_free_model_leaves_the_priced_models_ranks_as_they_were(
    make_catalog, make_model, complexity: float
) -> None:
    # Given the priced catalog, and the same with a weak free model added
    priced = make_catalog()
    with_free = make_catalog(*priced.models, free_model(make_model, quality=0.0, latency=1.0))

    # When a job of any complexity is routed on each
    alone = choose(request(complexity=complexity), priced)
    beside = choose(request(complexity=complexity), with_free)

    # Then the weak free model takes nothing, and the priced ones score exactly as before
    assert beside.model == alone.model
    scores = {c.model: c.score for c in beside.candidates}
    assert {c.model: c.score for c in alone.candidates}.items() <= scores.items()


def test_a_free_model_as_good_as_the_cheapest_wins_simple_jobs(make_catalog, make_model) -> None:
    free = free_model(make_model, quality=0.65, latency=0.8)
    catalog = make_catalog(*make_catalog().models, free)

    simple = choose(request(complexity=0.1), catalog)
    hard = choose(request(complexity=0.95), catalog)

    assert simple.model == "free"
    assert simple.expected_cost_usd == 0.0
    assert hard.model == "top"


def test_a_free_model_is_what_a_tiny_budget_can_afford(make_catalog, make_model) -> None:
    catalog = make_catalog(*make_catalog().models, free_model(make_model, quality=0.0, latency=2))

    decision = choose(request(complexity=0.9, max_cost_usd=1e-9), catalog)

    assert decision.model == "free"
    assert decision.max_cost_usd == 0.0


def test_complex_job_goes_to_the_strongest_model(make_catalog) -> None:
    decision = choose(request(complexity=0.95), make_catalog())

    assert decision.model == "top"
    assert decision.tier is Tier.PREMIUM


def test_simple_job_goes_to_the_cheapest_adequate_model(make_catalog) -> None:
    # Given: the cheapest model is below the quality floor
    # When
    decision = choose(request(complexity=0.1, min_quality=0.7), make_catalog())

    # Then
    assert decision.model == "mid"
    assert {c.model for c in decision.candidates} == {"mid", "top"}


def test_tier_pin_overrides_the_score(make_catalog) -> None:
    assert choose(request(complexity=0.1, tier=Tier.PREMIUM), make_catalog()).model == "top"
    assert choose(request(complexity=0.95, tier=Tier.FAST), make_catalog()).model == "cheap"


def test_quality_is_read_for_the_task_kind(make_catalog, make_model) -> None:
    # Given: two equally priced models, one strong at coding only
    catalog = make_catalog(
        make_model("generalist", quality={"general": 0.9, "coding": 0.5}),
        make_model("coder", quality={"general": 0.6, "coding": 0.95}),
    )

    # Then
    assert choose(request(task_kind="coding", complexity=0.9), catalog).model == "coder"
    assert choose(request(task_kind="general", complexity=0.9), catalog).model == "generalist"
    assert choose(request(task_kind="extraction", complexity=0.9), catalog).model == "generalist"


def test_equal_quality_prefers_the_faster_model(make_catalog, make_model) -> None:
    catalog = make_catalog(
        make_model("slow", expected_latency_s=10.0), make_model("quick", expected_latency_s=1.0)
    )

    assert choose(request(complexity=0.5), catalog).model == "quick"


@pytest.mark.parametrize(
    ("constraint", "mentions"),
    [
        ({"tier": Tier.BALANCED}, ["'balanced'"]),
        ({"prompt_tokens": 2_000_000}, ["2000000", "1000000"]),
        ({"min_quality": 0.99}, ["0.97", "top"]),
        ({"max_latency_s": 0.5}, ["0.800 s", "cheap"]),
        ({"max_cost_usd": 1e-4}, ["$0.000500", "cheap"]),
    ],
    ids=["tier", "input", "min_quality", "max_latency_s", "max_cost_usd"],
)
def test_constraint_that_rules_out_every_model_is_named(
    make_catalog, make_model, constraint, mentions
) -> None:
    # Given: no balanced model for the tier case; the defaults otherwise
    catalog = make_catalog()
    if "tier" in constraint:
        catalog = make_catalog(*(m for m in catalog.models if m.tier is not Tier.BALANCED))

    # When
    with pytest.raises(NoEligibleModel) as caught:
        choose(request(**constraint), catalog)

    # Then
    field = next(iter(constraint)).replace("prompt_tokens", "input")
    assert caught.value.field == field
    message = str(caught.value)
    for text in mentions:
        assert text in message


def test_prompt_must_leave_room_for_the_expected_answer(make_catalog, make_model) -> None:
    catalog = make_catalog(make_model("small", context_window=1_000))

    with pytest.raises(NoEligibleModel) as caught:
        choose(request(prompt_tokens=950, expected_output_tokens=100), catalog)
    assert caught.value.field == "input"

    assert choose(request(prompt_tokens=900, expected_output_tokens=100), catalog).model == "small"


def test_max_cost_uses_the_worst_case(make_catalog) -> None:
    # Given: cheap costs 1.4e-4 for the expected answer but 5e-4 with the full output budget
    catalog = make_catalog()
    job = {"prompt_tokens": 1_000, "expected_output_tokens": 100, "max_output_tokens": 1_000}

    # When / Then: a budget the expected cost fits but the worst case does not
    with pytest.raises(NoEligibleModel) as caught:
        choose(request(max_cost_usd=3e-4, **job), catalog)
    assert caught.value.field == "max_cost_usd"

    decision = choose(request(max_cost_usd=5e-4, **job), catalog)
    assert decision.model == "cheap"
    assert decision.max_cost_usd == pytest.approx(5e-4)
    assert decision.expected_cost_usd == pytest.approx(1.4e-4)


def test_max_cost_filters_to_the_models_it_affords(make_catalog) -> None:
    # Given: top could cost $0.05, mid $0.005, cheap $0.0005
    # When
    decision = choose(request(complexity=1.0, max_cost_usd=6e-3), make_catalog())

    # Then
    assert decision.model == "mid"
    assert {c.model for c in decision.candidates} == {"cheap", "mid"}


def test_output_budget_is_capped_by_the_model(make_catalog) -> None:
    # Given: top answers at most 2,048 tokens
    decision = choose(request(complexity=0.95, max_output_tokens=10_000), make_catalog())

    assert decision.model == "top"
    assert decision.max_output_tokens == 2_048
    assert decision.max_cost_usd == pytest.approx(1_000 * 1e-5 + 2_048 * 4e-5)


def test_output_budget_keeps_the_request_when_smaller(make_catalog) -> None:
    assert choose(request(max_output_tokens=300), make_catalog()).max_output_tokens == 300


def test_exclude_drops_models_already_tried(make_catalog) -> None:
    decision = choose(request(complexity=0.1, exclude=frozenset({"cheap"})), make_catalog())

    assert decision.model == "mid"
    assert decision.excluded == ["cheap"]
    assert "cheap" not in {c.model for c in decision.candidates}


def test_every_model_tried_is_no_eligible_model(make_catalog) -> None:
    tried = frozenset({"cheap", "mid", "top"})

    with pytest.raises(NoEligibleModel, match="already tried") as caught:
        choose(request(exclude=tried), make_catalog())

    assert caught.value.field == "exclude"


def test_candidates_are_best_first_and_at_most_five(make_catalog, make_model) -> None:
    # Given: seven models of rising quality and price
    catalog = make_catalog(
        *(
            make_model(f"m{i}", quality=0.3 + 0.1 * i, input_cost_per_token=1e-7 * 2**i)
            for i in range(7)
        )
    )

    # When
    decision = choose(request(complexity=0.5), catalog)

    # Then
    scores = [c.score for c in decision.candidates]
    assert len(decision.candidates) == CANDIDATES_KEPT == 5
    assert scores == sorted(scores, reverse=True)
    assert decision.candidates[0].model == decision.model
    assert "best of 7 eligible" in decision.reason


def test_decision_records_the_request(make_catalog) -> None:
    decision = choose(
        request(task_kind="extraction", complexity=0.3, prompt_tokens=1234), make_catalog()
    )

    assert (decision.task_kind, decision.complexity, decision.prompt_tokens) == (
        "extraction",
        0.3,
        1234,
    )


# --- models of unknown quality (a pasted LiteLLM entry Chordal's table does not list) -----------


def unknown_and_known(make_model) -> tuple[Model, Model]:
    """A cheap model of unknown quality (scored 0), and a dear one whose quality is known."""
    mystery = make_model(
        "mystery",
        quality=0.0,
        quality_source="unknown",
        input_cost_per_token=1e-8,
        output_cost_per_token=1e-8,
    )
    known = make_model("known", quality=0.6, input_cost_per_token=1e-5, output_cost_per_token=4e-5)
    return mystery, known  # fmt: skip


def test_unknown_quality_can_win_simple_work(make_catalog, make_model) -> None:
    decision = choose(request(complexity=0.1), make_catalog(*unknown_and_known(make_model)))

    assert decision.model == "mystery"
    assert not any("quality unknown" in note for note in decision.notes)


@pytest.mark.parametrize(
    ("fields", "why"),
    [({"complexity": 0.1, "min_quality": 0.0}, "the job has min_quality=0.0"),
     ({"complexity": 0.85}, "the job's complexity 0.85 is high")],
    ids=["min_quality", "high-complexity"],
)  # fmt: skip
def test_unknown_quality_is_never_chosen_for_demanding_jobs(
    make_catalog, make_model, fields, why
) -> None:
    # Given: the unknown model is far cheaper, and passes min_quality=0 on its placeholder 0
    catalog = make_catalog(*unknown_and_known(make_model))

    # When
    decision = choose(request(**fields), catalog)

    # Then: the known model is chosen, and the decision says why the other was left out
    assert decision.model == "known"
    assert [c.model for c in decision.candidates] == ["known"]
    assert f"left out (quality unknown; {why}): mystery" in decision.notes


def test_only_unknown_quality_left_is_no_eligible_model(make_catalog, make_model) -> None:
    mystery, _ = unknown_and_known(make_model)

    with pytest.raises(NoEligibleModel) as caught:
        choose(request(complexity=0.9), make_catalog(mystery))

    assert caught.value.field == "complexity"
    assert "only models of unknown quality are left (mystery)" in str(caught.value)
    assert "model_info.quality" in str(caught.value)


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    """The shipped catalog and agents, loaded as a worker would (no CHORDAL_* from outside)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("CHORDAL_"):
                patch.delenv(name)
        return Runtime.load(Settings(broker_url="redis://unused"))


def test_shipped_catalog_sends_a_summary_to_the_fast_tier(runtime: Runtime) -> None:
    decision = plan(Job(agent="summarizer", input="Summarise: the cat sat on the mat."), runtime)

    assert decision.tier is Tier.FAST


def test_shipped_catalog_sends_hard_analysis_to_premium(runtime: Runtime) -> None:
    job = Job(agent="analyst", input="Is the merger worth it?", complexity=0.95)

    assert plan(job, runtime).tier is Tier.PREMIUM


def test_shipped_catalog_honours_min_quality(runtime: Runtime) -> None:
    decision = plan(Job(agent="analyst", input="Why?", min_quality=0.95), runtime)

    assert runtime.catalog.get(decision.model).quality("general") >= 0.95
    assert all(c.quality >= 0.95 for c in decision.candidates)


def test_plan_excludes_models_already_tried(runtime: Runtime) -> None:
    job = Job(agent="analyst", input="Is the merger worth it?", complexity=0.95)
    first = plan(job, runtime)

    second = plan(job, runtime, exclude=frozenset({first.model}))

    assert second.model != first.model
    assert second.excluded == [first.model]


@pytest.mark.parametrize(
    ("policy", "pinned", "expected"),
    [
        ("down", Tier.PREMIUM, [Tier.BALANCED, Tier.FAST]),
        ("up", Tier.FAST, [Tier.BALANCED, Tier.PREMIUM]),
        ("any", Tier.BALANCED, [Tier.FAST, Tier.PREMIUM]),
        ("none", Tier.BALANCED, []),
        # The local tier is outside the order both ways: a private job never moves to a
        # provider, and no provider's tier falls back to a 135M model.
        ("any", Tier.LOCAL, []),
        ("up", Tier.LOCAL, []),
        ("down", Tier.FAST, []),
    ],
)
def test_fallback_tiers_follow_the_policy_nearest_first(policy, pinned, expected) -> None:
    from agents.run import fallback_tiers

    assert fallback_tiers(pinned, policy) == expected


def test_a_pinned_job_falls_back_a_tier_when_its_own_is_exhausted(runtime: Runtime) -> None:
    from dataclasses import replace

    # Given: every premium model already failed for this job, and the policy allows down
    downward = replace(
        runtime, settings=runtime.settings.model_copy(update={"fallback_tiers": "down"})
    )
    job = Job(agent="analyst", input="Why?", tier=Tier.PREMIUM)
    premium = frozenset(m.name for m in runtime.catalog.models if m.tier is Tier.PREMIUM)

    # When / Then: without fallback it stops; with it, it moves down one tier and says so
    with pytest.raises(NoEligibleModel):
        plan(job, downward, exclude=premium)
    decision = plan(job, downward, exclude=premium, fallback=True)
    assert decision.tier is Tier.BALANCED
    assert decision.notes[0].startswith("fell back from tier premium to balanced")


def test_a_cascade_starts_cheap_and_keeps_the_strong_model_to_escalate_to(
    runtime: Runtime,
) -> None:
    job = Job(agent="critic", input="Review this plan.", cascade="schema")

    decision = plan(job, runtime)
    direct = plan(job.model_copy(update={"cascade": None, "complexity": 1.0}), runtime)

    assert decision.cascade == [direct.model]
    assert decision.max_cost_usd < direct.max_cost_usd
    assert (
        decision.notes[-1] == f"cascade: {decision.model} first, {direct.model} if its answer fails"
    )


def test_auto_complexity_is_estimated_from_the_input(runtime: Runtime) -> None:
    from routing.complexity import estimate_complexity

    text = "Why does this deadlock? Analyze the trade-offs and design a fix, step by step."
    decision = plan(Job(agent="analyst", input=text, complexity="auto"), runtime)

    assert decision.complexity == estimate_complexity(text)
