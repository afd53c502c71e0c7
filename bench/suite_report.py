"""The suite's figures: one line per requirement, its target and whether this run met it.

Every part of :mod:`bench.suite` returns a :class:`Part`: headline :class:`Figure` rows for the
summary table, plus its raw numbers (``details``), an optional table of its own and notes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROWS = ("a", "b", "c", "d", "e", "f", "g")
# The headline ratios under ``verdicts`` in the JSON report, so runs compare by name; null when
# a run did not measure one.
VERDICTS = (
    "c500_vs_bare", "c500_vs_naive", "c1000_vs_bare", "cpu_per_call_vs_bare", "processes2_vs_1",
    "g_kb_per_call", "g_vs_bare", "b_own_share_vs_raw", "b_pinned_own_share_vs_raw",
)  # fmt: skip


@dataclass(frozen=True)
class Figure:
    """One measured value; ``met`` is None when it has no target or the target size was not run."""

    row: str
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    compared: str = ""

    def as_json(self) -> dict[str, Any]:
        """The figure as plain data."""
        return asdict(self)


@dataclass
class Part:
    """What one part of the suite measured."""

    row: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    table: str = ""
    verdicts: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float, unit: str, **extra: Any) -> Figure:
        """Append a figure of this part's row and return it."""
        figure = Figure(self.row, name, value, unit, **extra)
        self.figures.append(figure)
        return figure


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (inclusive method); the value itself for a single sample."""
    if not values:
        raise ValueError("no samples")
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def ratio(value: float, base: float) -> float:
    """``value / base``, rounded; 0 when the base is 0 (never a division error in a report)."""
    return round(value / base, 3) if base else 0.0


def verdict(met: bool | None) -> str:
    """The verdict cell of a figure."""
    return {True: "met", False: "**missed**", None: "—"}[met]


def _value(figure: Figure) -> str:
    if figure.unit == "bool":
        return "yes" if figure.value else "no"
    if figure.unit == "x":
        return f"{figure.value:.2f}x"
    text = f"{figure.value:,.3f}" if abs(figure.value) < 10 else f"{figure.value:,.1f}"
    return f"{text} {figure.unit}".rstrip()


def summary_table(parts: Sequence[Part]) -> str:
    """Every part's figures as one markdown table, in row order."""
    lines = [
        "| row | measurement | value | compared in this run | target | verdict |",
        "|---|---|---:|---|---|---|",
    ]
    for part in sorted(parts, key=lambda p: p.row):
        for f in part.figures:
            lines.append(
                f"| {f.row} | {f.name} | {_value(f)} | {f.compared} | {f.target} | "
                f"{verdict(f.met) if f.target else ''} |"
            )
    return "\n".join(lines)


def render(parts: Sequence[Part], *, machine_line: str, failures: Sequence[str]) -> str:
    """The whole report as markdown: summary, then each part's own table and notes."""
    met = [f for p in parts for f in p.figures if f.met is True]
    missed = [f for p in parts for f in p.figures if f.met is False]
    lines = [
        "# Chordal benchmark suite",
        "",
        machine_line,
        "",
        summary_table(parts),
        "",
        f"Targets: {len(met)} met, {len(missed)} missed"
        + (f" ({', '.join(f'{f.row}: {f.name}' for f in missed)})" if missed else "")
        + ".",
    ]
    lines += [f"- FAILED {failure}" for failure in failures]
    for part in sorted(parts, key=lambda p: p.row):
        lines += ["", f"## {part.row}. {part.title}"]
        if part.table:
            lines += ["", part.table]
        if part.notes:
            lines += ["", *(f"- {note}" for note in part.notes)]
    return "\n".join(lines)


def write_json(
    path: Path,
    parts: Sequence[Part],
    *,
    machine: dict[str, Any],
    params: dict[str, Any],
    failures: Sequence[str],
) -> None:
    """Write the report as JSON: ``verdicts`` (the headline ratios by name), ``rows`` (every
    figure), ``parts`` (their raw numbers)."""
    verdicts: dict[str, float | None] = dict.fromkeys(VERDICTS)
    for part in parts:
        verdicts.update(part.verdicts)
    report = {
        "machine": machine,
        "params": params,
        "verdicts": verdicts,
        "rows": [f.as_json() for part in parts for f in part.figures],
        "parts": {
            part.row: {"title": part.title, "details": part.details, "notes": part.notes}
            for part in parts
        },
        "failures": list(failures),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
