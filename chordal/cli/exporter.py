"""``chordal exporter``: queue depth and age per tier (and the fleet's state) for Prometheus.

Registered onto the main command by :func:`register`. It imports neither LiteLLM nor a
worker, so it starts in a moment and can run as a small Deployment next to the broker.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from chordal.cli.render import console, fail
from workers.credentials import require_passwords
from workers.errors import ChordalError
from workers.settings import get_settings

# EX_CONFIG (sysexits.h), as a worker that cannot work exits.
EXIT_CONFIG = 78


def register(cli: typer.Typer) -> None:
    """Add ``exporter`` to the ``chordal`` command."""
    cli.command()(exporter)


def exporter(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of /metrics.")] = 9808,
    # Loopback unless asked: the endpoint has no auth and shows budgets and breakers. The
    # compose and k8s manifests pass --addr 0.0.0.0 so Prometheus can reach the container.
    addr: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet/--no-fleet",
            help="Also publish breakers, budgets and rate-limit headroom (needs Redis).",
        ),
    ] = True,
) -> None:
    """Serve each queue's depth and oldest-message age for KEDA or an HPA, until Ctrl-C."""
    from chordal.exporter import run_exporter

    settings = get_settings()
    if not settings.broker_url:
        raise fail("no broker: set CHORDAL_BROKER_URL")
    try:
        require_passwords(settings)
    except ChordalError as exc:
        raise fail(exc, code=EXIT_CONFIG) from None
    if fleet and settings.backend_url is None:
        raise fail("the fleet's state lives in Redis: set CHORDAL_RESULT_BACKEND or --no-fleet")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    console.print(f"serving queue metrics on http://{addr}:{port}/metrics")
    try:
        run_exporter(
            broker_url=settings.broker_url,
            port=port,
            include_fleet=fleet,
            settings=settings,
            addr=addr,
            stop=stop,
        )
    except (ChordalError, OSError) as exc:
        raise fail(exc) from None
