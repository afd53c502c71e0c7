"""Benchmark rows, the machine they ran on, and the markdown table and JSON they end up in."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

BARE = "bare-asyncio"


@dataclass
class Row:
    """One scenario at one concurrency."""

    scenario: str
    concurrency: int
    calls: int
    ok: int
    errors: int
    wall_s: float
    peak_in_flight: int
    cpu_s: float | None = None
    ratio_vs_bare: float | None = None
    first_error: str | None = None
    # The simulator's own CPU per call meanwhile (its process, from /proc): its ceiling.
    sim_cpu_ms_per_call: float | None = None

    @property
    def calls_per_s(self) -> float:
        """Requested calls over wall time (failed calls count: ``errors`` says how many)."""
        return self.calls / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_ms_per_call(self) -> float | None:
        """CPU of the process making the calls (bare loop or worker), per call."""
        return self.cpu_s * 1000 / self.calls if self.cpu_s is not None else None

    def as_json(self) -> dict[str, Any]:
        """The row with its derived figures, for the JSON report."""
        cpu = self.cpu_ms_per_call
        return {
            **asdict(self),
            "calls_per_s": round(self.calls_per_s, 2),
            "cpu_ms_per_call": round(cpu, 2) if cpu is not None else None,
        }


def set_ratios(rows: list[Row]) -> None:
    """Fill each row's calls/s ratio against the bare-asyncio row of the same concurrency."""
    bare = {row.concurrency: row.calls_per_s for row in rows if row.scenario == BARE}
    for row in rows:
        base = bare.get(row.concurrency)
        row.ratio_vs_bare = round(row.calls_per_s / base, 3) if base else None


def machine() -> dict[str, Any]:
    """CPU count, load and the versions that decide the figures."""
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "celery": metadata.version("celery"),
        "litellm": metadata.version("litellm"),
        "platform": platform.platform(),
    }


def markdown_table(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| scenario | concurrency | calls | wall s | calls/s | peak in-flight | vs bare asyncio "
        "| CPU ms/call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = f"{row.ratio_vs_bare:.2f}x" if row.ratio_vs_bare is not None else "n/a"
        cpu = f"{row.cpu_ms_per_call:.1f}" if row.cpu_ms_per_call is not None else "n/a"
        lines.append(
            f"| {row.scenario} | {row.concurrency} | {row.calls} | {row.wall_s:.2f} | "
            f"{row.calls_per_s:.1f} | {row.peak_in_flight} | {ratio} | {cpu} |"
        )
    return "\n".join(lines)


def machine_line(info: dict[str, Any]) -> str:
    """One line describing the machine, for the printed report."""
    return (
        f"machine: nproc={info['nproc']} (usable {info['cpus_usable']}), "
        f"load(1m)={info['loadavg_1m']}, python {info['python']}, celery {info['celery']}, "
        f"litellm {info['litellm']}, {info['platform']}"
    )


def write_json(
    path: Path, *, rows: list[Row], info: dict[str, Any], params: dict[str, Any], notes: list[str]
) -> None:
    """Write the report as JSON to ``path``."""
    report = {
        "machine": info,
        "params": params,
        "rows": [row.as_json() for row in rows],
        "notes": notes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
