"""How the ``chordal`` command prints: a job's result (a table per agent or team, then the
answers) and errors, on the two consoles every command group shares."""

from __future__ import annotations

from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workers.tiers import Tier

console = Console(stderr=True)
"""Progress and errors (stderr)."""
out = Console()
"""Results (stdout)."""


def fail(error: Exception | str, *, code: int = 1) -> typer.Exit:
    """Print ``error`` and return the exit to raise."""
    console.print(f"[red]error:[/red] {escape(str(error))}")
    return typer.Exit(code=code)


def print_result(out: Console, result: dict[str, Any], *, as_json: bool) -> None:
    """A job's result: a table and the answer, or JSON."""
    if as_json:
        out.print_json(data=result)
        return
    if "team" in result:
        _print_team(out, result)
        return
    decision = result["decision"]
    table = Table(title=f"job {result['job_id']}", show_header=False)
    rows = [
        ("agent", result["agent"]),
        ("model", result["model"]),
        ("tier", result["tier"]),
        ("why", decision["reason"]),
        ("tokens in / out", f"{result['tokens_in']} / {result['tokens_out']}"),
        ("cost", f"${result['cost_usd']:.6f}"),
        ("latency", f"{result['latency_s']:.3f} s"),
        ("attempts", str(result["attempts"])),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    # The answer is the model's text, not Rich markup: "[simulated]" must print as written.
    answer = result["structured"] if result.get("structured") else result["output"]
    out.print(answer, markup=False, highlight=False)


def _print_team(out: Console, result: dict[str, Any]) -> None:
    title = f"team {result['team']} ({result['pattern']}) job {result['job_id']}"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("#", "agent", "model", "tier", "tokens", "cost", "secs"):
        table.add_column(column, no_wrap=True)
    rows = [*result["members"], result["aggregator"]]
    if result.get("planner"):
        rows.insert(0, result["planner"])
    for index, member in enumerate(rows, start=1):
        if member["status"] != "succeeded":
            outcome = f"{member['status'].replace('_', ' ')}: {member['error_kind']}"
            table.add_row(str(index), member["agent"], f"[red]{outcome}[/red]")
            continue
        table.add_row(
            str(index), member["agent"], member["model"], member["tier"],
            f"{member['tokens_in']}/{member['tokens_out']}", f"${member['cost_usd']:.6f}",
            f"{member['latency_s']:.2f}",
        )  # fmt: skip
    out.print(table)
    out.print(
        f"{result['succeeded']} succeeded, {result['failed']} failed, "
        f"{result['timed_out']} timed out; total "
        f"${result['cost_usd']:.6f}, {result['tokens_in']}/{result['tokens_out']} tokens"
    )
    out.print(result["output"], markup=False, highlight=False)


def print_local_answers(out: Console, result: dict[str, Any]) -> None:
    """The answers of a team's members on the local tier."""
    # The simulator's answers only say that they are simulated; the local model's are real text.
    # A single agent's answer is printed already; a team prints only its aggregator's.
    for member in result.get("members", []):
        if member.get("status") == "succeeded" and member.get("tier") == Tier.LOCAL:
            out.print(f"\n{member['agent']} on {member['model']} (local) answered:")
            out.print(member["output"], markup=False, highlight=False)
