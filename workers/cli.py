"""The ``chordal`` command: run the local stack, submit and inspect jobs, start workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.live import Live
from rich.tree import Tree

from workers.cli_bench import register as register_bench_command
from workers.cli_cost import register as register_cost_commands
from workers.cli_exporter import register as register_exporter_command
from workers.cli_render import print_local_answers, print_result
from workers.cli_routing import register as register_routing_commands
from workers.errors import ChordalError
from workers.settings import Settings, get_settings
from workers.tiers import ROUTER_QUEUE, Tier

if TYPE_CHECKING:
    from agents.client import Client, JobStatus

DEMO_INPUT = (
    "Why should a task queue acknowledge a job only after it finished, and what does that "
    "cost? Answer in two sentences."
)

cli = typer.Typer(help="Chordal: a Celery task queue of LLM agents.", no_args_is_help=True)
console = Console(stderr=True)
out = Console()


def _client() -> Client:
    from agents.client import Client

    try:
        return Client()
    except ChordalError as exc:
        raise _fail(exc) from None


def _fail(error: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {error}")
    return typer.Exit(code=1)


@cli.command()
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
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Submit a job to AGENT (or --team TEAM) with input TEXT; prints its id or, with --wait,
    its result."""
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
    }
    client = _client()
    try:
        job_id = client.submit({key: value for key, value in job.items() if value is not None})
        if not wait:
            out.print_json(data={"job_id": job_id}) if as_json else out.print(job_id)
            return
        result = _wait_with_progress(client, job_id)
    except (ChordalError, TimeoutError) as exc:
        raise _fail(exc) from None
    print_result(out, result, as_json=as_json)


@cli.command()
def status(
    job_id: str,
    watch: Annotated[bool, typer.Option(help="Refresh until the job ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a job's state, model and tier; for a team, every member's (live with --watch)."""
    client = _client()
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


@cli.command()
def cancel(job_id: str) -> None:
    """Cancel a job and everything it started; nothing more of it runs or costs."""
    client = _client()
    client.cancel(job_id)
    out.print(f"{job_id}: cancelled")


@cli.command()
def worker(
    tier: Annotated[Tier | None, typer.Option(help="Serve this tier's queue.")] = None,
    router: Annotated[bool, typer.Option("--router", help="Serve the router queue.")] = False,
    concurrency: Annotated[int | None, typer.Option(help="Threads (in-flight jobs).")] = None,
    loglevel: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Start a worker: ``--tier fast`` wraps ``celery -A workers.app worker -Q tier.fast``."""
    if (tier is None) == (not router):
        raise _fail(ValueError("give exactly one of --tier TIER or --router"))
    settings = get_settings()
    if not settings.broker_url:
        raise _fail(ChordalError("no broker: set CHORDAL_BROKER_URL (or use `chordal dev`)"))
    from workers.app import app

    queue, name = (Tier(tier).queue, str(tier)) if tier is not None else (ROUTER_QUEUE, "router")
    if router:
        default_threads = settings.router_concurrency
    elif tier == Tier.LOCAL:
        # A local model server is CPU-bound and answers one call at a time.
        default_threads = settings.local_concurrency
    else:
        default_threads = settings.tier_concurrency
    threads = concurrency or default_threads
    app.worker_main(
        [
            "worker",
            "-Q",
            queue,
            "-P",
            "threads",
            "-c",
            str(threads),
            "--prefetch-multiplier",
            "1",
            "-n",
            f"{name}-{os.getpid()}@%h",
            "-l",
            loglevel,
            "--without-mingle",
            "--without-gossip",
        ]
    )


@cli.command()
def sim(
    port: Annotated[int, typer.Option()] = 8765,
    seed: Annotated[int | None, typer.Option()] = None,
    latency_scale: Annotated[float | None, typer.Option()] = None,
) -> None:
    """Run the provider simulator (an OpenAI-compatible server) in the foreground."""
    from workers.simulator.server import main as simulator_main
    from workers.stack import simulator_profiles

    settings = get_settings()
    config = settings.data_dir / "simulator.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(simulator_profiles(settings)))
    simulator_main(
        [
            "--port",
            str(port),
            "--config",
            str(config),
            "--seed",
            str(settings.sim_seed if seed is None else seed),
            "--latency-scale",
            str(settings.sim_latency_scale if latency_scale is None else latency_scale),
        ]
    )


LocalModelOption = Annotated[
    bool,
    typer.Option(
        "--local-model",
        help="Turn the local tier on: start llama.cpp's server with SmolLM2 (the `local` extra) "
        "unless CHORDAL_LOCAL_MODEL_URL names a server, and a local tier worker.",
    ),
]


def _stack_settings(*, local_model: bool) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={"local_model": True}) if local_model else settings


@cli.command()
def dev(local_model: LocalModelOption = False) -> None:
    """Run broker, simulator, router and tier workers in the foreground until Ctrl-C."""
    from workers.stack import LocalStack

    stack = LocalStack(
        _stack_settings(local_model=local_model),
        progress=lambda msg: console.print(f"[dim]…[/dim] {msg}"),
    )
    with stack, contextlib.ExitStack() as extras:
        settings = stack.settings
        console.print(f"[green]Chordal is up.[/green] broker: {settings.broker_url}")
        console.print(f"simulator: {settings.simulator_url}; logs: {settings.data_dir}")
        if settings.local_model_url:
            console.print(f"local model: {settings.local_model_url} (tier local)")
        ports = ", ".join(f"{name} :{port}" for name, port in stack.metrics_ports.items())
        console.print(f"metrics (/metrics): {ports}")
        if settings.flower_port:
            from workers.flower import Flower, make_password

            password = settings.flower_password or make_password()
            flower = Flower(
                env=stack.env(), port=settings.flower_port, user=settings.flower_user,
                password=password, log_dir=settings.data_dir / "logs",
            )  # fmt: skip
            extras.enter_context(flower)
            console.print(
                f"flower: {flower.url} (user {settings.flower_user}, password {password})"
            )
        exports = f"CHORDAL_BROKER_URL={settings.broker_url}"
        if settings.local_model_url:
            # Commands that read the catalog (breaker list, explain) must see the local model.
            exports += f" CHORDAL_LOCAL_MODEL_URL={settings.local_model_url}"
        console.print(f"export {exports}  # then submit", soft_wrap=True)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(1.0):
            stack.check_alive()
        console.print("stopping…")


@cli.command()
def demo(
    team: Annotated[
        str | None,
        typer.Option(
            help="The team that runs the demo job [default: research; research-local when the "
            "local tier is on]."
        ),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Run a single agent instead of a team.")] = None,
    text: Annotated[str, typer.Option("--input")] = DEMO_INPUT,
    local_model: LocalModelOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Start the stack, run one job end to end, print the answer and what it cost, stop.

    By default the job is a team (three members on three tiers, then a writer; with
    ``--local-model`` a fourth member on the local model); ``--agent`` runs one agent instead.
    """
    from agents.client import Client
    from workers.stack import LocalStack

    stack = LocalStack(
        _stack_settings(local_model=local_model),
        progress=lambda msg: console.print(f"[dim]…[/dim] {msg}"),
    )
    with stack:
        client = Client(settings=stack.settings)
        local = stack.settings.local_tier
        try:
            team = team or ("research-local" if local else "research")
            kind, target = ("agent", agent) if agent else ("team", team)
            job_id = client.submit({kind: target, "input": text})
            console.print(f"submitted job {job_id} to {kind} {target!r}")
            result = _wait_with_progress(client, job_id)
        except (ChordalError, TimeoutError) as exc:
            raise _fail(exc) from None
        finally:
            client.app.close()
    print_result(out, result, as_json=as_json)
    if local and not as_json:
        print_local_answers(out, result)


def _wait_with_progress(client: Client, job_id: str) -> dict[str, Any]:
    with console.status("queued") as spinner:

        def show(state: JobStatus) -> None:
            where = f" on {state.model} ({state.tier})" if state.model else ""
            spinner.update(f"{state.state.lower()}{where}")
            console.print(f"[dim]{state.state.lower()}{where}[/dim]")

        return client.wait(job_id, on_progress=show)


@cli.command("dead-letters")
def dead_letters(limit: Annotated[int, typer.Option(min=1)] = 20) -> None:
    """List the newest messages no worker could process."""
    from workers.deadletter import read_dead_letters

    out.print_json(data=read_dead_letters(_client().app, limit=limit))


register_routing_commands(cli)
register_cost_commands(cli)
register_exporter_command(cli)
register_bench_command(cli)


def main() -> None:
    """Entry point of the ``chordal`` script."""
    cli()


if __name__ == "__main__":
    main()
