"""Cost reports: parsing --since, totals, model-switching advice, the renderings and the command."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
from typer.testing import CliRunner

from agents.registry import AgentRegistry
from chordal.broker import EmbeddedBroker
from chordal.cli.cost import register
from chordal.cost_render import plot, render_csv, render_json, render_markdown
from chordal.cost_report import Recommendation, parse_since, recommend, summarise
from routing.catalog import Catalog, Model, read_catalog, resolve
from routing.ledger import Ledger, LedgerRow
from routing.llm import model_cost_map
from workers.settings import get_settings
from workers.tiers import Tier

NOW = datetime(2026, 11, 7, 12, 30, tzinfo=UTC)
DAY1, DAY2 = date(2026, 11, 6), date(2026, 11, 7)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PER_M = 1e-6


def _row(day: date = DAY1, **fields: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "tenant": "acme", "model": "big", "agent": "summarizer", "tier": "premium",
        "requests": 10, "errors": 0, "tokens_in": 10_000, "tokens_out": 1_000,
        "cost_usd": 0.13, "latency_s_sum": 20.0,
    }  # fmt: skip
    return LedgerRow(day=day, **{**values, **fields})


def _model(
    name: str, tier: Tier, extraction: float, usd_in_per_m: float, usd_out_per_m: float,
    *, general: float = 0.5,
) -> Model:  # fmt: skip
    return Model(
        name=name, tier=tier, litellm_params={"model": name}, price_model=name,
        input_cost_per_token=usd_in_per_m * PER_M, output_cost_per_token=usd_out_per_m * PER_M,
        context_window=100_000, max_output_tokens=4_096, expected_latency_s=1.0,
        quality_by_kind={"general": general, "extraction": extraction},
    )  # fmt: skip


CATALOG = Catalog(
    models=(
        _model("big", Tier.PREMIUM, 0.95, 10.0, 30.0, general=0.9),
        _model("mid", Tier.BALANCED, 0.92, 1.0, 3.0),
        _model("pricier-mid", Tier.BALANCED, 0.93, 2.0, 6.0),
        _model("small", Tier.FAST, 0.80, 0.1, 0.4),
    ),
    profile="offline",
)
KINDS: dict[str, Any] = {"summarizer": "extraction", "writer": "general"}


# --- parse_since --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", date(2026, 11, 1)), ("1d", DAY2), ("24h", DAY1), ("12h", DAY2), (" 2D ", DAY1),
     ("2026-10-15", date(2026, 10, 15))],
)  # fmt: skip
def test_since_accepts_days_hours_and_dates(text: str, expected: date) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [("0d", "at least 1d"), ("week", "neither a duration"), ("2026-12-01", "in the future")],
)
def test_since_refuses_what_it_cannot_read(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_since(text, now=NOW)


# --- summarise ----------------------------------------------------------------------------


def test_summarise_totals_by_day_model_and_tenant() -> None:
    # Given two days of calls by two tenants on two models, some failed
    rows = [
        _row(DAY1),
        _row(DAY1, tenant="globex", model="mid", tier="balanced", errors=5, cost_usd=0.02),
        _row(DAY2, requests=30, errors=3, cost_usd=0.39, latency_s_sum=30.0),
    ]

    # When summarised over three days, the first idle
    report = summarise(rows, since=DAY1 - timedelta(days=1), until=DAY2)

    # Then
    assert report.days == (DAY1 - timedelta(days=1), DAY1, DAY2)
    assert report.span_days == 3
    assert (report.total.requests, report.total.errors) == (50, 8)
    assert report.total.success_rate == pytest.approx(0.84)
    assert report.total.error_rate == pytest.approx(0.16)
    assert report.total.mean_latency_s == pytest.approx(70 / 50)
    assert report.by_model["big"].cost_usd == pytest.approx(0.52)
    assert report.by_tenant["globex"].error_rate == 0.5
    assert report.daily_by_model[DAY1]["mid"].cost_usd == pytest.approx(0.02)
    assert report.daily_by_tenant[DAY2]["acme"].tokens_in == 10_000
    assert report.by_day[DAY2].requests == 30
    assert report.model_tiers == {"big": ("premium",), "mid": ("balanced",)}


def test_an_empty_ledger_summarises_to_nothing() -> None:
    report = summarise([])

    assert (report.days, report.total.requests, report.total.success_rate) == ((), 0, 0.0)


# --- recommend ----------------------------------------------------------------------------


def test_an_agent_mostly_on_premium_is_pointed_at_the_cheapest_close_model() -> None:
    # Given summarizer spent two days mostly on premium "big" (10 M in, 1 M out: $130)
    rows = [
        _row(DAY1, tokens_in=5_000_000, tokens_out=500_000, cost_usd=65.0, requests=45),
        _row(DAY2, tokens_in=5_000_000, tokens_out=500_000, cost_usd=65.0, requests=45),
        _row(DAY2, model="small", tier="fast", requests=10, cost_usd=0.01),
    ]

    # When advice is asked for over those two days
    (advice,) = recommend(rows, CATALOG, days=2, task_kinds=KINDS)

    # Then "mid" (0.92 vs 0.95 for extraction; $13 for the same tokens) beats "pricier-mid",
    # and "small" (0.80) is too far below
    assert (advice.model, advice.candidate, advice.candidate_tier) == ("big", "mid", "balanced")
    assert advice.share == 0.9
    assert advice.cost_usd_per_day == pytest.approx(65.0)
    assert advice.candidate_usd_per_day == pytest.approx(6.5)
    assert advice.saves_usd_per_day == pytest.approx(58.5)
    assert advice.message == (
        "agent `summarizer` on premium (big): mid (balanced) scores within 0.05 for "
        "extraction; saves $58.50/day"
    )


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        ([_row(), _row(model="mid", tier="balanced")], "split evenly between tiers"),
        ([_row(model="small", tier="fast")], "already on the cheapest tier"),
        ([_row(agent="unknown")], "no task kind known"),
        ([_row(model="retired")], "model left the catalog"),
        ([_row(cost_usd=0.0)], "cost nothing"),
        ([_row(agent="writer")], "no cheaper model within 0.05 for general"),
    ],
)
def test_no_advice_without_a_clear_cheaper_choice(rows: list[LedgerRow], why: str) -> None:
    assert recommend(rows, CATALOG, days=1, task_kinds=KINDS) == [], why


def test_the_margin_is_inclusive_and_configurable() -> None:
    rows = [_row(model="mid", tier="balanced")]
    edge = _model("edge", Tier.FAST, 0.87, 0.1, 0.1)
    exactly = Catalog(models=(*CATALOG.models, edge), profile="offline")

    (advice,) = recommend(rows, exactly, days=1, task_kinds=KINDS)

    assert advice.candidate == "edge"
    assert recommend(rows, exactly, days=1, task_kinds=KINDS, margin=0.01) == []
    with pytest.raises(ValueError, match="days must be at least 1"):
        recommend(rows, exactly, days=0, task_kinds=KINDS)


def test_the_shipped_catalog_suggests_gpt_5_mini_for_summaries_on_gemini_pro() -> None:
    # Given the real catalog and agent registry
    catalog = resolve(
        read_catalog(), profile="offline", simulator_url="http://x", model_cost=model_cost_map()
    )
    registry = AgentRegistry.load()
    kinds = {name: registry.get(name).task_kind for name in registry.names()}
    pro = catalog.get("gemini-2.5-pro")
    spent = pro.cost(prompt_tokens=2_000_000, completion_tokens=300_000)
    rows = [_row(model="gemini-2.5-pro", tokens_in=2_000_000, tokens_out=300_000, cost_usd=spent)]

    (advice,) = recommend(rows, catalog, days=1, task_kinds=kinds)

    # Then extraction 0.90 on balanced gpt-5-mini is within 0.05 of gemini-2.5-pro's 0.91
    assert (advice.task_kind, advice.candidate, advice.candidate_tier) == (
        "extraction", "gpt-5-mini", "balanced",
    )  # fmt: skip
    assert advice.message.startswith("agent `summarizer` on premium (gemini-2.5-pro): gpt-5-mini")


# --- renderings ---------------------------------------------------------------------------


@pytest.fixture
def rendered_inputs() -> tuple[Any, list[Recommendation]]:
    rows = [
        _row(DAY1, tokens_in=5_000_000, tokens_out=500_000, cost_usd=65.0),
        _row(DAY2, tenant="a|b, inc", errors=2, cost_usd=0.000123),
    ]
    return summarise(rows, since=DAY1, until=DAY2), recommend(
        rows, CATALOG, days=2, task_kinds=KINDS
    )


def test_markdown_has_tables_and_the_advice(rendered_inputs: tuple[Any, Any]) -> None:
    report, advice = rendered_inputs

    text = render_markdown(report, advice)

    assert "| day | big | total |" in text
    assert "| 2026-11-06 | $65.00 | $65.00 |" in text
    assert "| day | acme | a\\|b, inc | total |" in text
    assert "| 2026-11-07 | $0.00 | $0.000123 | $0.000123 |" in text
    assert "| big | premium | 20 | 90.0% | 10.0% |" in text
    assert "- agent `summarizer` on premium (big): mid (balanced)" in text


def test_markdown_says_when_there_is_no_advice() -> None:
    assert "None: " in render_markdown(summarise([]), [])


def test_json_parses_with_totals_days_and_advice(rendered_inputs: tuple[Any, Any]) -> None:
    report, advice = rendered_inputs

    document = json.loads(render_json(report, advice))

    assert (document["since"], document["until"]) == ("2026-11-06", "2026-11-07")
    assert document["total"]["requests"] == 20
    assert document["total"]["error_rate"] == 0.1
    assert [day["cost_by_tenant"] for day in document["daily"]] == [
        {"acme": 65.0}, {"a|b, inc": 0.000123},
    ]  # fmt: skip
    assert document["models"][0]["tiers"] == ["premium"]
    assert len(document["rows"]) == 2
    assert document["recommendations"][0]["candidate"] == "mid"
    assert document["recommendations"][0]["message"] == advice[0].message


def test_csv_has_one_line_per_daily_row(rendered_inputs: tuple[Any, Any]) -> None:
    report, _ = rendered_inputs

    lines = list(csv.DictReader(io.StringIO(render_csv(report))))

    assert [(line["day"], line["tenant"], line["cost_usd"]) for line in lines] == [
        ("2026-11-06", "acme", "65.0"),
        ("2026-11-07", "a|b, inc", "0.000123"),
    ]
    assert lines[1]["error_rate"] == "0.2"
    assert lines[1]["mean_latency_s"] == "2.0"


def test_the_plot_is_a_png(rendered_inputs: tuple[Any, Any], tmp_path: Path) -> None:
    report, _ = rendered_inputs

    plot(report, tmp_path / "cost.png")
    plot(summarise([]), tmp_path / "empty.png")

    assert (tmp_path / "cost.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)


# --- the command --------------------------------------------------------------------------


@pytest.fixture
def command(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Run ``cost-report`` through a fresh Typer app, with settings re-read from the env."""
    monkeypatch.delenv("CHORDAL_RESULT_BACKEND", raising=False)
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A group, as the real ``chordal`` is: the command needs its name."""

    register(app)
    get_settings.cache_clear()

    def run(*args: str) -> Any:
        get_settings.cache_clear()
        return CliRunner().invoke(app, ["cost-report", *args])

    yield run
    get_settings.cache_clear()


def test_the_command_reports_recorded_calls(
    connect: Callable[[], redis.Redis],
    valkey: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
    command: Callable[..., Any],
    tmp_path: Path,
) -> None:
    # Given a week of summaries on gemini-2.5-pro in the broker's ledger
    monkeypatch.setenv("CHORDAL_BROKER_URL", valkey.url)
    ledger, now = Ledger(connect()), datetime.now(UTC).timestamp()
    for days_ago in range(7):
        ledger.record(
            tenant="acme", model="gemini-2.5-pro", agent="summarizer", tier="premium",
            tokens_in=20_000, tokens_out=3_000, cost_usd=0.055, latency_s=4.0,
            ok=days_ago != 3, at=now - days_ago * 86_400,
        )  # fmt: skip

    # When the report is asked for as JSON with a plot, then as Markdown
    as_json = command("--since", "7d", "--format", "json", "--plot", str(tmp_path / "c.png"))
    as_md = command()

    # Then
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert (document["total"]["requests"], document["total"]["errors"]) == (7, 1)
    assert document["total"]["cost_usd"] == pytest.approx(0.385)
    assert len(document["daily"]) == 7
    assert document["recommendations"][0]["candidate"] == "gpt-5-mini"
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
    assert as_md.exit_code == 0, as_md.output
    assert "agent `summarizer` on premium (gemini-2.5-pro): gpt-5-mini (balanced)" in as_md.stdout
    as_csv = command("--since", "2d", "--format", "csv")
    assert len(list(csv.DictReader(io.StringIO(as_csv.stdout)))) == 2


def test_the_command_explains_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, command: Callable[..., Any]
) -> None:
    monkeypatch.delenv("CHORDAL_BROKER_URL", raising=False)
    bad_since = command("--since", "fortnight")
    no_redis = command()

    assert bad_since.exit_code == 2
    assert "neither a duration" in bad_since.stderr
    assert no_redis.exit_code == 1
    assert "error: no Redis to read the cost ledger from" in no_redis.stderr
