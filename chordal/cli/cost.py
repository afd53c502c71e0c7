"""``chordal cost-report``: what the fleet's LLM calls cost, read from the ledger in Redis.

Registered onto the main command by :func:`register`. The report itself is built by the plain
functions of :mod:`chordal.cost_report` and rendered by :mod:`chordal.cost_render`; this module
only reads the ledger, the catalog and the agent registry, and prints.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from chordal.cli.render import console, fail
from workers.errors import ChordalError, ConfigurationError
from workers.settings import get_settings

if TYPE_CHECKING:
    from routing.catalog import Catalog
    from routing.ledger import LedgerRow
    from workers.tiers import TaskKind

# A Redis that does not answer must fail the command quickly, not hang the terminal.
SOCKET_TIMEOUT_S = 5.0


class ReportFormat(StrEnum):
    """How ``cost-report`` prints."""

    MD = "md"
    JSON = "json"
    CSV = "csv"


def register(cli: typer.Typer) -> None:
    """Add ``cost-report`` to the ``chordal`` command."""
    cli.command("cost-report")(cost_report)


def cost_report(
    since: Annotated[
        str, typer.Option(help="7d (the last 7 UTC days), 24h, or a date: 2026-11-01.")
    ] = "7d",
    report_format: Annotated[
        ReportFormat, typer.Option("--format", help="md, json or csv (daily rows).")
    ] = ReportFormat.MD,
    plot: Annotated[
        Path | None, typer.Option(help="Also save a PNG of daily cost per model here.")
    ] = None,
) -> None:
    """Daily LLM cost per model and tenant, tokens, success and error rates, cheaper models."""
    from chordal.cost_render import plot as plot_report
    from chordal.cost_render import render_csv, render_json, render_markdown
    from chordal.cost_report import parse_since, recommend, summarise

    try:
        first = parse_since(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    today = datetime.now(UTC).date()
    rows = _read_ledger(first, today)
    try:
        catalog, task_kinds = _catalog_and_task_kinds()
    except ChordalError as exc:
        raise fail(exc) from None
    report = summarise(rows, since=first, until=today)
    advice = recommend(rows, catalog, days=report.span_days, task_kinds=task_kinds)
    if report_format is ReportFormat.JSON:
        text = render_json(report, advice)
    elif report_format is ReportFormat.CSV:
        text = render_csv(report)
    else:
        text = render_markdown(report, advice)
    # Plain text, not Rich: Markdown tables and CSV must not be wrapped to the terminal's width.
    typer.echo(text, nl=False)
    if plot is not None:
        try:
            plot_report(report, plot)
        except OSError as exc:
            raise fail(f"cannot write the plot: {exc}") from None
        console.print(f"wrote {escape(str(plot))}")


def _read_ledger(since: date, until: date) -> list[LedgerRow]:
    import redis

    from routing.ledger import Ledger
    from workers.tls import redis_ssl

    url = get_settings().backend_url
    if url is None:
        raise fail(
            ConfigurationError(
                "no Redis to read the cost ledger from: set CHORDAL_BROKER_URL or "
                "CHORDAL_RESULT_BACKEND to a redis:// URL"
            )
        )
    client = redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
        **redis_ssl(url),
    )  # fmt: skip
    try:
        return Ledger(client).rows(since_day=since, until_day=until)
    except redis.RedisError as exc:
        raise fail(f"cannot read the cost ledger: {exc}") from None
    finally:
        client.close()


def _catalog_and_task_kinds() -> tuple[Catalog, dict[str, TaskKind]]:
    # Prices and quality do not depend on the profile; offline needs no provider keys.
    from agents.registry import AgentRegistry
    from routing.catalog import TierDefaults, read_catalog_for, resolve
    from routing.llm import model_cost_map

    settings = get_settings()
    catalog = resolve(
        read_catalog_for(settings),
        profile="offline",
        simulator_url=settings.simulator_url,
        # Nothing is called here: a local model whose server is not running still has prices.
        local_url=settings.local_model_url or settings.simulator_url,
        model_cost=model_cost_map(),
        defaults=TierDefaults.from_settings(settings),
    )
    registry = AgentRegistry.load(settings.agents_path)
    return catalog, {name: registry.get(name).task_kind for name in registry.names()}
