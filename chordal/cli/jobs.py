"""``chordal submit``, ``status``, ``cancel`` and ``dead-letters``: jobs, from a terminal.

``chordal dead-letters`` lists the messages no worker could process; its ``replay`` and
``purge`` subcommands publish them again or delete them (:mod:`workers.deadletter`).

Registered onto the main command by :func:`register`. Only :mod:`agents.client` is imported
(never LiteLLM or the router), so each command answers as quickly as the client connects.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import RenderableType
from rich.live import Live
from rich.tree import Tree

from chordal.cli.render import console, fail, out, print_result
from workers.errors import ChordalError
from workers.tiers import Tier

if TYPE_CHECKING:
    from agents.client import Client, JobStatus

jobs_cli = typer.Typer()
dead_letters_cli = typer.Typer(help="Messages no worker could process: list, replay, purge.")


def register(cli: typer.Typer) -> None:
    """Add the job commands to the ``chordal`` command."""
    cli.registered_commands.extend(jobs_cli.registered_commands)
    cli.add_typer(dead_letters_cli, name="dead-letters")


def connect() -> Client:
    """A producer client from the environment's settings, or a clean exit saying why not."""
    from agents.client import Client

    try:
        return Client()
    except ChordalError as exc:
        raise fail(exc) from None


@jobs_cli.command()
def submit(
    target: Annotated[str, typer.Argument(metavar="AGENT", help="Agent (or team, with --team).")],
    text: str,
    team: Annotated[bool, typer.Option("--team", help="AGENT names a team.")] = False,
    tier: Annotated[Tier | None, typer.Option(help="Pin the job to a tier.")] = None,
    complexity: Annotated[float | None, typer.Option(min=0, max=1)] = None,
    max_cost_usd: Annotated[float | None, typer.Option()] = None,
    max_latency_s: Annotated[float | None, typer.Option()] = None,
    min_quality: Annotated[float | None, typer.Option()] = None,
    tenant: Annotated[str, typer.Option()] = "default",
    priority: Annotated[int, typer.Option(min=0, max=9)] = 5,
    wait: Annotated[bool, typer.Option(help="Wait and print the result.")] = False,
    stream: Annotated[
        bool, typer.Option(help="Print its events (and tokens) as they arrive, then the result.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Submit a job to AGENT (or --team TEAM) with input TEXT; prints its id or, with --wait,
    its result (with --stream, its events as they happen first)."""
    job = {
        "team" if team else "agent": target,
        "input": text,
        "tier": tier,
        "complexity": complexity,
        "max_cost_usd": max_cost_usd,
        "max_latency_s": max_latency_s,
        "min_quality": min_quality,
        "tenant": tenant,
        "priority": priority,
        "stream": stream or None,
    }
    client = connect()
    try:
        job_id = client.submit({key: value for key, value in job.items() if value is not None})
        if stream:
            print_events(client, job_id, as_json=as_json)
            result = client.wait(job_id)
        elif not wait:
            out.print_json(data={"job_id": job_id}) if as_json else out.print(job_id)
            return
        else:
            result = wait_with_progress(client, job_id)
    except (ChordalError, TimeoutError) as exc:
        raise fail(exc) from None
    print_result(out, result, as_json=as_json)


def print_events(client: Client, job_id: str, *, as_json: bool) -> None:
    """The job's events to its end: tokens as they come, states and members a line each."""
    console.print(f"job {job_id}", style="dim")
    for event in client.stream(job_id):
        if as_json:
            out.print_json(data={"id": event.id, "event": event.kind, "data": event.data})
        elif event.kind == "token":
            out.print(event.data.get("text", ""), end="", markup=False, highlight=False)
        else:
            who = f"{event.data.get('agent')} " if event.kind == "member" else ""
            where = " ".join(str(event.data[k]) for k in ("model", "tier") if k in event.data)
            console.print(f"[dim]{who}{event.data.get('state')} {where}[/dim]")


@jobs_cli.command()
def status(
    job_id: str,
    watch: Annotated[bool, typer.Option(help="Refresh until the job ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a job's state, model and tier; for a team, every member's (live with --watch)."""
    client = connect()
    if as_json:
        state = client.status(job_id)
        out.print_json(data={**state.__dict__, "members": client.tree(job_id)})
        return
    if watch:
        with Live(_status_view(client, job_id), console=out, auto_refresh=False) as live:
            while not client.status(job_id).done:
                time.sleep(0.5)
                live.update(_status_view(client, job_id), refresh=True)
            live.update(_status_view(client, job_id), refresh=True)
        return
    out.print(_status_view(client, job_id))
    state = client.status(job_id)
    if state.result and "team" not in state.result:
        print_result(out, state.result, as_json=False)


def _status_view(client: Client, job_id: str) -> RenderableType:
    state = client.status(job_id)
    where = f" on {state.model} ({state.tier})" if state.model else ""
    error = f" [red]{state.error_type}: {state.error}[/red]" if state.error else ""
    root = Tree(f"{job_id}: [bold]{state.state}[/bold]{where}{error}")
    branches = {job_id: root}
    # Members of a nested team hang under the member that runs the team.
    for node in client.tree(job_id):
        outcome = node.get("status", node["state"].lower())
        if node.get("model"):
            outcome += f" on {node['model']} ({node['tier']})"
        if "cost_usd" in node:
            outcome += f", ${node['cost_usd']:.6f}"
        if "latency_s" in node:
            outcome += f", {node['latency_s']:.2f} s"
        if node.get("error_kind"):
            outcome += f": {node['error_kind']}"
        parent = branches.get(node.get("parent") or job_id, root)
        label = f"{node['phase']} #{node['index'] + 1} {node['agent']}: {outcome}"
        branches[node["task_id"]] = parent.add(label)
    return root


@jobs_cli.command()
def cancel(job_id: str) -> None:
    """Cancel a job and everything it started; nothing more of it runs or costs."""
    client = connect()
    client.cancel(job_id)
    out.print(f"{job_id}: cancelled")


@dead_letters_cli.callback(invoke_without_command=True)
def dead_letters(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1)] = 20) -> None:
    """List the newest messages no worker could process (each with the id to replay it by)."""
    if ctx.invoked_subcommand is not None:
        return
    from workers.deadletter import read_dead_letters

    out.print_json(data=read_dead_letters(connect().app, limit=limit))


@dead_letters_cli.command()
def replay(
    record_id: Annotated[str | None, typer.Argument(metavar="ID")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every record, oldest first.")] = False,
) -> None:
    """Publish a dead letter's message, unchanged, to its queue again; its record is deleted
    once published (a message still bad is dead-lettered again, under a new id)."""
    import redis
    from kombu.exceptions import OperationalError

    from workers.deadletter import NotReplayable, replay_dead_letter, replay_dead_letters

    one = _one_or_all(record_id, every, command="replay")
    app = connect().app
    try:
        if one is None:
            done = replay_dead_letters(app)
            out.print_json(data={"replayed": done.replayed, "kept": done.kept})
            return
        replay = replay_dead_letter(app, one)
    except (LookupError, NotReplayable) as exc:
        raise fail(exc) from None
    except (redis.RedisError, OperationalError, OSError) as exc:
        raise fail(f"not replayed, the record is kept: {exc}") from None
    task = f" as task {replay.task_id}" if replay.task_id else ""
    out.print(f"{one}: replayed to {replay.record['queue']}{task}")


@dead_letters_cli.command()
def purge(
    record_id: Annotated[str | None, typer.Argument(metavar="ID")] = None,
    every: Annotated[bool, typer.Option("--all", help="Delete every record.")] = False,
) -> None:
    """Delete one dead letter, or with --all every one."""
    from workers.deadletter import purge_dead_letter, purge_dead_letters

    one = _one_or_all(record_id, every, command="purge")
    app = connect().app
    if one is None:
        out.print(f"{purge_dead_letters(app)} dead letters deleted")
        return
    if not purge_dead_letter(app, one):
        raise fail(f"no dead letter {one!r}")
    out.print(f"{one}: deleted")


def _one_or_all(record_id: str | None, every: bool, *, command: str) -> str | None:
    # Exactly one of the two, so a bare `purge` never means "everything".
    if (record_id is None) == (not every):
        raise fail(f"give a dead letter's ID or --all: chordal dead-letters {command} ID", code=2)
    return record_id


def wait_with_progress(client: Client, job_id: str) -> dict[str, Any]:
    with console.status("queued") as spinner:

        def show(state: JobStatus) -> None:
            where = f" on {state.model} ({state.tier})" if state.model else ""
            spinner.update(f"{state.state.lower()}{where}")
            console.print(f"[dim]{state.state.lower()}{where}[/dim]")

        return client.wait(job_id, on_progress=show)
