"""``chordal health``: the container HEALTHCHECK (:mod:`chordal.health` says what each role's
check means). Registered onto the main command by :func:`register`; imports nothing heavy, as
Docker runs it every interval.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from chordal.cli.render import console, fail


def register(cli: typer.Typer) -> None:
    """Add ``health`` to the ``chordal`` command."""
    cli.command()(health)


def health(
    command: Annotated[
        list[str] | None,
        typer.Argument(help="The command to check, as it was started [default: PID 1's]."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for an answer.")] = 3.0,
) -> None:
    """Check this container's Chordal process through its own endpoint; exit 1 if unhealthy."""
    from chordal.health import check, pid1_argv, probe_for

    argv = list(command) if command else pid1_argv()
    try:
        probe = probe_for(argv, os.environ)
    except ValueError as exc:
        raise fail(f"cannot tell the port: {exc}") from None
    if probe is None:
        console.print(f"healthy: nothing to probe for {' '.join(argv) or 'this process'}")
        return
    ok, line = check(probe, timeout)
    if not ok:
        raise fail(line)
    console.print(f"healthy: {line}")
