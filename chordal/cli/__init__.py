"""The ``chordal`` command: one Typer app, one module per command group.

- :mod:`chordal.cli.jobs`: ``submit``, ``status``, ``cancel``, ``dead-letters``;
- :mod:`chordal.cli.stack`: ``worker``, ``sim``, ``dev``, ``demo``;
- :mod:`chordal.cli.routing`: ``breaker``, ``explain``;
- :mod:`chordal.cli.catalog`: ``catalog check``;
- :mod:`chordal.cli.cost`: ``cost-report``;
- :mod:`chordal.cli.exporter`: ``exporter``;
- :mod:`chordal.cli.gateway`: ``gateway``, ``gateway new-key``;
- :mod:`chordal.cli.bench`: ``bench``;
- :mod:`chordal.cli.health`: ``health`` (the image's HEALTHCHECK);
- :mod:`chordal.cli.render`: how results and errors print.

A new command goes in the module of its group (or a new one registered here). Each imports what
it needs when it runs, so ``chordal --help`` loads neither LiteLLM nor a worker.
"""

from __future__ import annotations

import typer

from chordal.cli import bench, catalog, cost, exporter, gateway, health, jobs, routing, stack

cli = typer.Typer(help="Chordal: a Celery task queue of LLM agents.", no_args_is_help=True)

for group in (jobs, stack, routing, catalog, cost, exporter, gateway, bench, health):
    group.register(cli)


def main() -> None:
    """Entry point of the ``chordal`` script."""
    cli()
