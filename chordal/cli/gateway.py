"""``chordal gateway``: the HTTP gateway, and ``chordal gateway new-key`` to make an API key.

Registered onto the main command by :func:`register`. The gateway imports the producer client
only (neither LiteLLM nor routing), so it starts in a moment.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from chordal.cli.render import console, fail, out
from workers.errors import ConfigurationError
from workers.settings import get_settings

# EX_CONFIG (sysexits.h), as a worker that cannot work exits.
EXIT_CONFIG = 78

gateway_cli = typer.Typer(help="The HTTP gateway (docs/security.md).")


def register(cli: typer.Typer) -> None:
    """Add ``gateway`` to the ``chordal`` command."""
    cli.add_typer(gateway_cli, name="gateway")


@gateway_cli.callback(invoke_without_command=True)
def gateway(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="[default: CHORDAL_GATEWAY_HOST]")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="[default: CHORDAL_GATEWAY_PORT]")
    ] = None,
) -> None:
    """Serve jobs over HTTP until Ctrl-C; refuses to start without API keys."""
    if ctx.invoked_subcommand is not None:
        return
    from chordal.gateway.serve import serve

    settings = get_settings()
    try:
        serve(settings, host=host or settings.gateway_host, port=port or settings.gateway_port)
    except ConfigurationError as exc:
        raise fail(exc, code=EXIT_CONFIG) from None


@gateway_cli.command("new-key")
def new_key(
    tenant: Annotated[str, typer.Option(help="The tenant the key submits as.")],
) -> None:
    """Make an API key for ``tenant``: give the key to the tenant, configure only its digest."""
    from chordal.gateway.keys import KeyRing, digest
    from chordal.gateway.keys import new_key as make_key

    key = make_key()
    try:
        KeyRing({digest(key): tenant})
    except ConfigurationError as exc:
        raise fail(exc) from None
    console.print("the key (shown once; the gateway never stores it):", style="dim")
    out.print(key, soft_wrap=True)
    console.print("its entry for CHORDAL_GATEWAY_KEYS or the keys file:", style="dim")
    out.print(json.dumps({digest(key): tenant}), soft_wrap=True)
