"""``chordal worker``, ``sim``, ``dev`` and ``demo``: start Chordal's processes.

Registered onto the main command by :func:`register`. The local stack (:mod:`chordal.stack`)
and the worker's Celery app are imported when a command runs, so ``chordal --help`` stays quick.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from chordal.cli.jobs import wait_with_progress
from chordal.cli.render import console, fail, out, print_local_answers, print_result
from workers.credentials import masked
from workers.errors import ChordalError
from workers.settings import Settings, get_settings
from workers.tiers import ROUTER_QUEUE, Tier

# A tier worker's pool: `CELERY_CUSTOM_WORKER_POOL=workers.loop_pool:LoopPool celery -A
# workers.app worker --pool custom` is the same worker without this command.
LOOP_POOL = "workers.loop_pool:LoopPool"
DEMO_INPUT = (
    "Why should a task queue acknowledge a job only after it finished, and what does that "
    "cost? Answer in two sentences."
)

stack_cli = typer.Typer()


def register(cli: typer.Typer) -> None:
    """Add the commands that start processes to the ``chordal`` command."""
    cli.registered_commands.extend(stack_cli.registered_commands)


@stack_cli.command()
def worker(
    tier: Annotated[Tier | None, typer.Option(help="Serve this tier's queue.")] = None,
    router: Annotated[bool, typer.Option("--router", help="Serve the router queue.")] = False,
    concurrency: Annotated[int | None, typer.Option(help="Threads (in-flight jobs).")] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (default: CHORDAL_WORKER_PROCESSES, else the container's CPUs).",
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Start a worker: ``--tier fast`` wraps ``celery -A workers.app worker -Q tier.fast``."""
    if (tier is None) == (not router):
        raise fail(ValueError("give exactly one of --tier TIER or --router"))
    settings = get_settings()
    if not settings.broker_url:
        raise fail(ChordalError("no broker: set CHORDAL_BROKER_URL (or use `chordal dev`)"))
    from chordal.processes import default_processes, supervise

    count = processes or settings.worker_processes or default_processes()
    if count > 1:
        child = [sys.executable, "-m", "chordal.cli", "worker", "--processes", "1"]
        child += ["--tier", str(tier)] if tier is not None else ["--router"]
        child += ["--loglevel", loglevel]
        child += ["--concurrency", str(concurrency)] if concurrency else []
        raise typer.Exit(supervise(child, count, metrics_port=settings.metrics_port))
    from celery.bin.celery import celery as celery_command

    queue, name = (Tier(tier).queue, str(tier)) if tier is not None else (ROUTER_QUEUE, "router")
    if router:
        default_threads = settings.router_concurrency
    elif tier == Tier.LOCAL:
        # A local model server is CPU-bound and answers one call at a time.
        default_threads = settings.local_concurrency
    else:
        default_threads = settings.tier_concurrency
    threads = concurrency or default_threads
    pool = "threads" if router or settings.tier_pool == "threads" else "custom"
    # Celery's way to an out-of-tree pool: --pool custom names CELERY_CUSTOM_WORKER_POOL, read
    # when celery.concurrency is first imported (already done here, hence both).
    from celery import concurrency as celery_pools

    os.environ["CELERY_CUSTOM_WORKER_POOL"] = LOOP_POOL
    celery_pools.ALIASES["custom"] = LOOP_POOL
    # Celery's own command in standalone mode, which exits with the worker's code; app.start
    # and app.worker_main drop it, so a worker that refused to start (agents/startup.py) would
    # exit 0 here.
    celery_command.main(
        [
            "--app",
            "workers.app",
            "worker",
            "-Q",
            queue,
            "-P",
            pool,
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
        ],
        prog_name="celery",
    )


@stack_cli.command()
def sim(
    port: Annotated[int, typer.Option()] = 8765,
    seed: Annotated[int | None, typer.Option()] = None,
    latency_scale: Annotated[float | None, typer.Option()] = None,
) -> None:
    """Run the provider simulator (an OpenAI-compatible server) in the foreground."""
    from chordal.simulator.server import main as simulator_main
    from chordal.stack import simulator_profiles

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


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    """``export NAME=value`` lines, readable by this user only: the broker URL holds a password
    that is never printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(f"export {name}={shlex.quote(v)}\n" for name, v in values.items()))
    return path


def _stack_settings(*, local_model: bool) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={"local_model": True}) if local_model else settings


@stack_cli.command()
def dev(local_model: LocalModelOption = False) -> None:
    """Run broker, simulator, router and tier workers in the foreground until Ctrl-C."""
    from chordal.stack import LocalStack

    stack = LocalStack(
        _stack_settings(local_model=local_model),
        progress=lambda msg: console.print(f"[dim]…[/dim] {msg}"),
    )
    with stack, contextlib.ExitStack() as extras:
        settings = stack.settings
        console.print(f"[green]Chordal is up.[/green] broker: {masked(settings.broker_url)}")
        console.print(f"simulator: {settings.simulator_url}; logs: {settings.data_dir}")
        if settings.local_model_url:
            console.print(f"local model: {settings.local_model_url} (tier local)")
        ports = ", ".join(f"{name} :{port}" for name, port in stack.metrics_ports.items())
        console.print(f"metrics (/metrics): {ports}")
        if settings.flower_port:
            from chordal.flower import Flower, make_password

            password = settings.flower_password or make_password()
            flower = Flower(
                env=stack.env(), port=settings.flower_port, user=settings.flower_user,
                password=password, log_dir=settings.data_dir / "logs",
            )  # fmt: skip
            extras.enter_context(flower)
            console.print(
                f"flower: {flower.url} (user {settings.flower_user}, password {password})"
            )
        gateway_env: dict[str, str] = {}
        if settings.gateway_port:
            from chordal.gateway.service import GatewayService

            gateway = GatewayService.for_dev(
                env=stack.env(), port=settings.gateway_port, log_dir=settings.data_dir / "logs"
            )
            extras.enter_context(gateway)
            key = next(iter(gateway.keys))
            console.print(f"gateway: {gateway.url} (API key {key}, tenant default)", soft_wrap=True)
            example = """-d '{"agent": "summarizer", "input": "..."}'"""
            curl = (f"curl -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
                    f"{example} {gateway.url}/v1/jobs")  # fmt: skip
            console.print(f"  {curl}", soft_wrap=True, markup=False)
            gateway_env = {"CHORDAL_GATEWAY_URL": gateway.url, "CHORDAL_API_KEY": key}
        exports = {"CHORDAL_BROKER_URL": str(settings.broker_url), **gateway_env}
        if settings.local_model_url:
            # Commands that read the catalog (breaker list, explain) must see the local model.
            exports["CHORDAL_LOCAL_MODEL_URL"] = settings.local_model_url
        env_file = write_env_file(settings.data_dir / "dev.env", exports)
        console.print(f"source {env_file}  # then submit (the broker's password is in it)",
                      soft_wrap=True)  # fmt: skip
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(1.0):
            stack.check_alive()
        console.print("stopping…")


@stack_cli.command()
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
    from chordal.stack import LocalStack

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
            result = wait_with_progress(client, job_id)
        except (ChordalError, TimeoutError) as exc:
            raise fail(exc) from None
        finally:
            client.app.close()
    print_result(out, result, as_json=as_json)
    if local and not as_json:
        print_local_answers(out, result)
