"""``chordal bench``: every benchmark of issue #6 side by side (``bench.suite``).

Registered onto the main command by :func:`register`. The suite starts its own broker,
simulator and workers; it never touches a configured deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from chordal.cli.render import console

ROWS = "abcdefg"


def register(cli: typer.Typer) -> None:
    """Add ``bench`` to the ``chordal`` command."""
    cli.command()(bench)


def bench(
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Tiny sizes: checks that it runs (< 1 min).")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PNG of row c: calls/s against concurrency.")
    ] = None,
    only: Annotated[str, typer.Option(help="Rows to run, comma-separated (a-g).")] = ",".join(ROWS),
) -> None:
    """Run the benchmark suite (rows a-g, each against a baseline of the same run) and print a
    markdown report; about 5 minutes on 2 cores."""
    rows = [row.strip() for row in only.split(",") if row.strip()]
    if not rows or any(row not in ROWS for row in rows):
        console.print(f"[red]error:[/red] --only takes rows among {escape(','.join(ROWS))}")
        raise typer.Exit(code=2)
    try:
        from bench.suite import run_suite
    except ImportError as exc:
        console.print(f"[red]error:[/red] the benchmarks ship with the source tree: {exc}")
        raise typer.Exit(code=1) from None
    code = run_suite(smoke=smoke, only=rows, json_path=json_path, plot_path=plot)
    if code:
        raise typer.Exit(code=code)
