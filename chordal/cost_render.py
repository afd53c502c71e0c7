"""Renderings of a cost report: Markdown, JSON, CSV and a PNG chart of daily cost per model.

Each takes a :class:`~chordal.cost_report.Report` (and the recommendations, where they fit) and
returns text, or writes the file, so ``chordal cost-report`` only picks one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chordal.cost_report import Recommendation, Report, Totals, usd
from routing.ledger import LedgerRow

ROW_KEYS = ("day", "tenant", "model", "agent", "tier")
CSV_COLUMNS = (*ROW_KEYS, *Totals().as_dict())
_TOTAL_HEADERS = (
    "requests", "success", "errors", "tokens in", "tokens out", "cost", "mean latency",
)  # fmt: skip


def render_markdown(report: Report, recommendations: Sequence[Recommendation]) -> str:
    """The report as Markdown: a summary line, daily tables, per-model and per-tenant tables."""
    total = report.total
    span = f"{report.days[0]} to {report.days[-1]}" if report.days else "no days"
    lines = [
        f"# Chordal cost report, {span} (UTC)",
        "",
        f"{usd(total.cost_usd)} over {total.requests:,} requests: "
        f"{_percent(total.success_rate, total)} succeeded, {_percent(total.error_rate, total)} "
        f"failed; {total.tokens_in:,} tokens in, {total.tokens_out:,} out; mean latency "
        f"{total.mean_latency_s:.2f} s.",
    ]
    for title, daily, names in (
        ("Daily cost per model", report.daily_by_model, list(report.by_model)),
        ("Daily cost per tenant", report.daily_by_tenant, list(report.by_tenant)),
    ):
        names.sort()
        body = [
            [
                day.isoformat(),
                *(usd(daily.get(day, {}).get(name, Totals()).cost_usd) for name in names),
                usd(report.by_day.get(day, Totals()).cost_usd),
            ]
            for day in report.days
        ]
        lines += ["", f"## {title}", "", *_table(["day", *names, "total"], body)]
    lines += ["", "## Models", ""]
    lines += _table(
        ["model", "tier", *_TOTAL_HEADERS],
        [
            [name, ", ".join(report.model_tiers.get(name, ())), *_total_cells(totals)]
            for name, totals in sorted(report.by_model.items())
        ],
        text_columns=2,
    )
    lines += ["", "## Tenants", ""]
    lines += _table(
        ["tenant", *_TOTAL_HEADERS],
        [[name, *_total_cells(totals)] for name, totals in sorted(report.by_tenant.items())],
    )
    lines += ["", "## Recommendations", ""]
    lines += [f"- {rec.message}" for rec in recommendations] or [
        "None: no agent's usual tier has a cheaper model of comparable quality in the catalog."
    ]
    return "\n".join(lines) + "\n"


def _total_cells(totals: Totals) -> list[str]:
    return [
        f"{totals.requests:,}",
        _percent(totals.success_rate, totals),
        _percent(totals.error_rate, totals),
        f"{totals.tokens_in:,}",
        f"{totals.tokens_out:,}",
        usd(totals.cost_usd),
        f"{totals.mean_latency_s:.2f} s",
    ]


def _table(
    headers: Sequence[str], body: Sequence[Sequence[str]], *, text_columns: int = 1
) -> list[str]:
    # Names come from jobs; a '|' or a newline in one must not break the table.
    def row(cells: Sequence[str]) -> str:
        escaped = (cell.replace("|", "\\|").replace("\n", " ") for cell in cells)
        return "| " + " | ".join(escaped) + " |"

    # Names left, numbers right.
    rule = "|" + "|".join("---" if i < text_columns else "--:" for i in range(len(headers))) + "|"
    return [row(headers), rule, *(row(cells) for cells in body)]


def render_json(report: Report, recommendations: Sequence[Recommendation]) -> str:
    """The report as a JSON document: totals, daily breakdowns, the raw rows and the advice."""
    document = {
        "since": report.days[0].isoformat() if report.days else None,
        "until": report.days[-1].isoformat() if report.days else None,
        "total": report.total.as_dict(),
        "daily": [
            {
                "day": day.isoformat(),
                **report.by_day.get(day, Totals()).as_dict(),
                "cost_by_model": _costs(report.daily_by_model.get(day, {})),
                "cost_by_tenant": _costs(report.daily_by_tenant.get(day, {})),
            }
            for day in report.days
        ],
        "models": [
            {"model": name, "tiers": list(report.model_tiers.get(name, ())), **totals.as_dict()}
            for name, totals in sorted(report.by_model.items())
        ],
        "tenants": [
            {"tenant": name, **totals.as_dict()}
            for name, totals in sorted(report.by_tenant.items())
        ],
        "rows": [_row(row) for row in report.rows],
        "recommendations": [
            {
                **asdict(rec),
                "saves_usd_per_day": round(rec.saves_usd_per_day, 6),
                "message": rec.message,
            }
            for rec in recommendations
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _costs(totals: Mapping[str, Totals]) -> dict[str, float]:
    return {name: round(t.cost_usd, 6) for name, t in sorted(totals.items())}


def render_csv(report: Report) -> str:
    """The report's ledger rows as CSV, one line per day, tenant, model, agent and tier."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_row(row) for row in report.rows)
    return buffer.getvalue()


def _row(row: LedgerRow) -> dict[str, Any]:
    names = (row.day.isoformat(), row.tenant, row.model, row.agent, row.tier)
    return {**dict(zip(ROW_KEYS, names, strict=True)), **Totals().plus(row).as_dict()}


def plot(report: Report, path: Path) -> None:
    """Save a PNG of daily cost per model as stacked bars (matplotlib's Agg backend, no display)."""
    # Imported here: matplotlib takes a second to import, and only --plot needs it.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [day.isoformat() for day in report.days]
    figure = Figure(figsize=(max(6.0, 0.5 * len(labels) + 3.0), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    palette = colormaps["tab20"]
    bottom = [0.0] * len(labels)
    # Most expensive model at the bottom, where its bars are easiest to compare day by day.
    models = sorted(report.by_model, key=lambda name: (-report.by_model[name].cost_usd, name))
    for index, model in enumerate(models):
        heights = [
            report.daily_by_model.get(day, {}).get(model, Totals()).cost_usd for day in report.days
        ]
        # A leading underscore hides a label from matplotlib's legend.
        label = model if not model.startswith("_") else f" {model}"
        axes.bar(labels, heights, bottom=bottom, label=label, color=palette(index % palette.N))
        bottom = [below + height for below, height in zip(bottom, heights, strict=True)]
    axes.set_title("Daily LLM cost per model (UTC)")
    axes.set_ylabel("USD")
    axes.tick_params(axis="x", labelrotation=45)
    if models:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        axes.text(0.5, 0.5, "no calls recorded", ha="center", transform=axes.transAxes)
    figure.savefig(path, format="png", dpi=100)


def _percent(rate: float, totals: Totals) -> str:
    return f"{100 * rate:.1f}%" if totals.requests else "-"
