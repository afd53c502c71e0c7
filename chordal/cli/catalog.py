"""``chordal catalog check``: read a catalog (a LiteLLM proxy config) as a worker would, without
a broker, and show every deployment, what was inferred, what is skipped and why, and what the
settings blocks set or leave aside.

A worker reads the catalog with the same functions (:func:`routing.catalog.catalog_for`) and
exits 78 where this command does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from chordal.cli.render import out
from workers.errors import ConfigurationError
from workers.settings import get_settings
from workers.tiers import QUALITY_TIERS

if TYPE_CHECKING:
    from routing.catalog import Catalog, Model

# What a worker exits with on a bad catalog (agents/startup.py): the same verdict, the same code.
EXIT_CONFIG = os.EX_CONFIG
MILLION = 1_000_000

catalog_cli = typer.Typer(
    help="Check a model catalog (a LiteLLM proxy config) as workers read it.",
    no_args_is_help=True,
)


def register(cli: typer.Typer) -> None:
    """Add ``catalog`` to the ``chordal`` command."""
    cli.add_typer(catalog_cli, name="catalog")


@catalog_cli.command("check")
def check(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="The catalog file; unset: the one in force (CHORDAL_CATALOG_PATH, else the "
            "shipped one).",
            show_default=False,
        ),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="The file is a local tier's catalog.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate a catalog and show each deployment, its inferred fields, and what is skipped.

    Exits 78 with a line per problem (entry and field) when a worker would refuse the file."""
    settings = get_settings()
    from routing.catalog import default_catalog_path

    path = path or settings.catalog_path or default_catalog_path()
    try:
        catalog = load(path, local=local)
    except ConfigurationError as exc:
        header, *lines = str(exc).splitlines()
        if as_json:
            problems = [line.strip() for line in lines] or [header]
            out.print_json(data={"path": str(path), "ok": False, "problems": problems})
        else:
            out.print(f"[red]error:[/red] {escape(header)}")
            for line in lines:
                out.print(f"  {escape(line.strip())}")
        raise typer.Exit(code=EXIT_CONFIG) from None
    report = as_report(catalog, path=path)
    if as_json:
        out.print_json(data=report)
    else:
        _print(report)


def load(path: Path, *, local: bool = False) -> Catalog:
    """The catalog in ``path`` as a worker resolves it (its prices from LiteLLM's map; nothing is
    called, so no keys are read and no server need run); raises ConfigurationError."""
    from routing.catalog import TierDefaults, check_tiers, read_catalog, resolve
    from routing.groups import keyed
    from routing.llm import model_cost_map

    settings = get_settings()
    file = read_catalog(path)
    check_tiers(file, path=path, local=local)
    try:
        # keyed: each deployment under the id the fleet keys it by, and what a worker refuses
        # in a group (a shared id, deployments in two tiers) refused here too.
        return keyed(
            resolve(
                file,
                profile="offline",
                simulator_url=settings.simulator_url,
                local_url=settings.local_model_url or settings.simulator_url,
                model_cost=model_cost_map(),
                defaults=TierDefaults.from_settings(settings),
            )
        )
    except ConfigurationError as exc:  # as catalog_for says it
        raise ConfigurationError(f"catalog {path}: {exc}") from None


def as_report(catalog: Catalog, *, path: Path) -> dict[str, Any]:
    """What ``chordal catalog check --json`` prints."""
    bands = get_settings().tier_price_bands_usd
    return {
        "path": str(path),
        "ok": True,
        "deployments": [_deployment(model) for model in catalog.models],
        "skipped": [
            {"entry": item.index, "model_name": item.model_name, "reason": item.reason}
            for item in catalog.skipped
        ],
        "unknown_quality": sorted({m.name for m in catalog.models if not m.quality_known}),
        "aliases": dict(catalog.aliases),
        "deployment_pick": catalog.deployment_pick,
        "tier_price_bands_usd": {str(tier): bands[tier] for tier in QUALITY_TIERS if tier in bands},
        "warnings": list(catalog.notes),
    }


def _deployment(model: Model) -> dict[str, Any]:
    from routing.catalog_infer import blended_usd_per_million

    return {
        "deployment_id": model.deployment_id,
        "group": model.name,
        "provider": model.provider,
        "price_model": model.price_model,
        "tier": str(model.tier),
        "tier_source": model.tier_source,
        "quality": dict(model.quality_by_kind) if model.quality_known else None,
        "quality_source": model.quality_source,
        "input_usd_per_million": round(model.input_cost_per_token * MILLION, 6),
        "output_usd_per_million": round(model.output_cost_per_token * MILLION, 6),
        "blended_usd_per_million": blended_usd_per_million(
            model.input_cost_per_token, model.output_cost_per_token
        ),
        "context_window": model.context_window,
        "max_output_tokens": model.max_output_tokens,
        "rpm": model.rpm,
        "tpm": model.tpm,
        "weight": model.weight,
        "expected_latency_s": model.expected_latency_s,
        "timeout_s": model.timeout_s,
    }


def _print(report: dict[str, Any]) -> None:
    rows = report["deployments"]
    table = Table(
        title=f"catalog {report['path']}: {len(rows)} deployments in "
        f"{len({row['group'] for row in rows})} groups",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("deployment", "group", "provider", "tier", "quality", "$/1M in/out"):
        table.add_column(column, no_wrap=True)
    table.add_column("context", justify="right", no_wrap=True)
    table.add_column("rpm/tpm", justify="right", no_wrap=True)
    for row in rows:
        inferred = row["tier_source"] == "inferred"
        quality = row["quality"]
        table.add_row(
            escape(row["deployment_id"]), escape(row["group"]), escape(row["provider"]),
            f"{row['tier']}*" if inferred else row["tier"],
            "[yellow]unknown[/yellow]" if quality is None
            else f"{quality['general']:.2f} {row['quality_source']}",
            f"${row['input_usd_per_million']:g}/${row['output_usd_per_million']:g}",
            f"{row['context_window']:,}",
            f"{_limit(row['rpm'])}/{_limit(row['tpm'])}",
        )  # fmt: skip
    bands = ", ".join(f"{tier} <= ${usd:g}" for tier, usd in report["tier_price_bands_usd"].items())
    table.caption = (
        "* tier inferred from the price: input and output $/1M averaged, "
        f"{bands}, premium above (CHORDAL_TIER_PRICE_BANDS_USD); quality: general score and "
        "where it came from (catalog, Chordal's table)"
    )
    out.print(table)
    if report["unknown_quality"]:
        out.print(
            f"[yellow]quality unknown:[/yellow] {escape(', '.join(report['unknown_quality']))}: "
            "never chosen for a job with min_quality or a high complexity (>= 0.85); give them "
            "model_info.quality"
        )
    pick = {
        "simple-shuffle": "weighted by weight (simple-shuffle)",
        "least-busy": "with the fewest calls in flight (least-busy)",
        None: "as CHORDAL_DEPLOYMENT_STRATEGY says (default: weighted by weight)",
    }
    out.print(f"within a group, a deployment is picked {pick[report['deployment_pick']]}")
    for alias, group in report["aliases"].items():
        out.print(f"alias {escape(alias)} -> {escape(group)}")
    for item in report["skipped"]:
        out.print(
            f"[yellow]skipped[/yellow] catalog entry {item['entry']} "
            f"({escape(item['model_name'])}): {escape(item['reason'])}"
        )
    for line in report["warnings"]:
        out.print(f"[yellow]warning[/yellow] {escape(line)}")


def _limit(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"
