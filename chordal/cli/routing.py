"""``chordal breaker`` and ``chordal explain``: the fleet's routing state, and why a job ran where.

Registered onto the main command by :func:`register`. Both read Redis directly (breakers,
latency, rate limits, recorded decisions) and import neither LiteLLM nor a worker: they stay as
quick as ``chordal status``.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from chordal.cli.render import fail, out
from workers.errors import ChordalError
from workers.settings import get_settings

if TYPE_CHECKING:
    from agents.client import Client
    from routing.catalog import CatalogEntry
    from routing.fleet import Fleet

breaker_cli = typer.Typer(
    help="See, force open and close the circuit breakers every worker shares.",
    no_args_is_help=True,
)


def register(cli: typer.Typer) -> None:
    """Add ``breaker`` and ``explain`` to the ``chordal`` command."""
    cli.add_typer(breaker_cli, name="breaker")
    cli.command()(explain)


def _fleet() -> tuple[Fleet, list[CatalogEntry]]:
    # routing.fleet imports the scoring code but not LiteLLM (checked: `sys.modules`).
    from routing.catalog import read_catalog_for
    from routing.fleet import Fleet

    settings = get_settings()
    try:
        return Fleet.connect(settings), read_catalog_for(settings).model_list
    except ChordalError as exc:
        raise fail(exc) from None


def _deployments(entries: list[CatalogEntry]) -> list[tuple[CatalogEntry, str]]:
    # Each entry with its key in the fleet's state: its model's name where the model has one
    # deployment, else the deployment's id (routing.groups.state_keys).
    from routing.catalog import deployment_id
    from routing.groups import state_keys

    keys = state_keys([(entry.model_name, deployment_id(entry)) for entry in entries])
    return list(zip(entries, keys, strict=True))


def _targets(entries: list[CatalogEntry], model: str) -> list[str]:
    """The state keys ``model`` names: a model group's every deployment, or one deployment (by
    its key or its id)."""
    from routing.catalog import deployment_id

    deployments = _deployments(entries)
    keys = [key for entry, key in deployments if entry.model_name == model]
    keys = keys or [key for entry, key in deployments if model in (key, deployment_id(entry))]
    if not keys:
        names = dict.fromkeys(entry.model_name for entry in entries)
        names |= dict.fromkeys(key for entry, key in deployments if key != entry.model_name)
        raise fail(f"unknown model {model!r}; the catalog has: {', '.join(names)}", code=2)
    return keys


@breaker_cli.command("list")
def list_breakers(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every catalog deployment's breaker, window, live latency and rate-limit headroom."""
    import redis

    fleet, entries = _fleet()
    try:
        rows = _breaker_rows(fleet, entries)
    except redis.RedisError as exc:
        raise fail(f"cannot read the fleet's state: {exc}") from None
    if as_json:
        out.print_json(data=rows)
        return
    table = Table(
        title="circuit breakers", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    grouped = any(row["deployment"] != row["model"] for row in rows)
    columns = ("model", *(["deployment"] if grouped else []), "tier", "state", "window")
    for column in (*columns, "p50/p95 s", "source"):
        table.add_column(column, no_wrap=column in {"model", "deployment", "state"})
    limited = any(row["headroom"] for row in rows)
    if limited:
        table.add_column("rate limits")
    for row in rows:
        latency = row["latency"]
        cells = [
            row["model"], *([row["deployment"]] if grouped else []), row["tier"], _state_label(row),
            f"{row['calls']}/{row['failures']}/{row['slow']}",
            f"{latency['p50']:.2f}/{latency['p95']:.2f}", latency["source"],
        ]  # fmt: skip
        table.add_row(*cells, *([_headroom_label(row["headroom"])] if limited else []))
    forced = "; * forced by an operator" if any(row["forced"] for row in rows) else ""
    table.caption = f"window: calls/failed/slow in the breaker's window{forced}"
    out.print(table)


def _breaker_rows(fleet: Fleet, entries: list[CatalogEntry]) -> list[dict[str, Any]]:
    from routing.catalog import written_latency_s

    deployments = _deployments(entries)
    states = fleet.breakers.states([key for _, key in deployments])
    defaults = get_settings().tier_expected_latency_s
    latency = fleet.latency.estimates(
        {key: written_latency_s(entry.model_info, defaults) for entry, key in deployments}
    )
    now = time.time()
    rows = []
    for (entry, key), state in zip(deployments, states, strict=True):
        until = state.opened_until if state.state == "open" else None
        held = until is not None and math.isinf(until)
        open_for = None if until is None or held else round(max(0.0, until - now), 3)
        estimate = latency[key]
        rows.append(
            {
                "model": entry.model_name,
                "deployment": key,
                "tier": str(entry.model_info.tier or "inferred"),
                "state": state.state,
                "calls": state.calls,
                "failures": state.failures,
                "slow": state.slow,
                "open_for_s": open_for,
                "until_closed": held,
                "forced": state.forced,
                "open_count": state.open_count,
                "latency": {
                    "p50": estimate.p50,
                    "p95": estimate.p95,
                    "samples": estimate.samples,
                    "source": estimate.source,
                },
                "headroom": _headroom(fleet, entry, key),
            }
        )
    return rows


def _headroom(fleet: Fleet, entry: CatalogEntry, key: str) -> dict[str, Any] | None:
    # Where the catalog puts limits: model_info, or litellm_params as in LiteLLM's proxy config.
    info, params = entry.model_info, entry.litellm_params
    rpm = info.rpm if info.rpm is not None else params.get("rpm")
    tpm = info.tpm if info.tpm is not None else params.get("tpm")
    if rpm is None and tpm is None:
        return None
    left = fleet.limits.headroom(key, rpm=rpm, tpm=tpm)
    return {"rpm": rpm, "tpm": tpm, **left}


def _state_label(row: dict[str, Any]) -> str:
    colour = {"closed": "green", "open": "red", "half_open": "yellow"}[row["state"]]
    label = row["state"].replace("_", "-")
    if row["until_closed"]:
        label = "held open"
    elif row["open_for_s"] is not None:
        label += f" {row['open_for_s']:.1f} s"
    return f"[{colour}]{label}{'*' if row['forced'] else ''}[/{colour}]"


def _headroom_label(headroom: dict[str, Any] | None) -> str:
    if headroom is None:
        return ""
    parts = [
        f"{headroom[left]}/{headroom[limit]} {limit}"
        for left, limit in (("requests", "rpm"), ("tokens", "tpm"))
        if headroom[limit] is not None
    ]
    if headroom["blocked_for_s"] > 0:
        parts.append(f"[red]blocked {headroom['blocked_for_s']:.1f} s[/red]")
    return ", ".join(parts)


@breaker_cli.command("open")
def open_breaker(
    model: str,
    seconds: Annotated[
        float | None, typer.Option(help="Hold it open this long (default: until closed).")
    ] = None,
) -> None:
    """Force MODEL's breaker open: no worker calls it until it is closed (or --seconds pass).

    MODEL is a model (every deployment of it) or one deployment's id."""
    import redis

    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise typer.BadParameter(f"{seconds} is not a positive number", param_hint="--seconds")
    fleet, entries = _fleet()
    for key in _targets(entries, model):
        try:
            fleet.breakers.force_open(key, seconds=seconds)
        except redis.RedisError as exc:
            raise fail(f"cannot open {key}'s breaker: {exc}") from None
        how_long = f"for {seconds:g} s" if seconds else f"until `chordal breaker close {key}`"
        out.print(f"{key}: breaker forced open {how_long}")


@breaker_cli.command("close")
def close_breaker(model: str) -> None:
    """Close MODEL's breaker (a model's every deployment, or one deployment's), with an empty
    window and a fresh backoff."""
    import redis

    fleet, entries = _fleet()
    for key in _targets(entries, model):
        try:
            fleet.breakers.force_close(key)
        except redis.RedisError as exc:
            raise fail(f"cannot close {key}'s breaker: {exc}") from None
        out.print(f"{key}: breaker closed")


def explain(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Why JOB_ID ran where it did: every routing decision, the failed attempts, the cascade.

    For a team job, every member's; a member's task id works too.
    """
    from agents.client import Client

    try:
        client = Client()
    except ChordalError as exc:
        raise fail(exc) from None
    try:
        report = _explain_report(client, job_id)
    finally:
        client.app.close()
    members = report["members"]
    if not report["decisions"] and not any(m["decisions"] for m in members):
        state = report["state"]
        why = f"{state}: {report['error']}" if report["error"] else state
        raise fail(
            f"no routing decisions recorded for {job_id} (state {why}): "
            "unknown or expired id, not routed yet, or refused before routing"
        )
    if as_json:
        out.print_json(data=report)
        return
    where = f" on {report['model']}" if report["model"] else ""
    out.print(f"[bold]job {job_id}[/bold]: {report['state']}{where}")
    _print_task(report)
    for member in members:
        label = f"{member['phase']} #{member['index'] + 1} {member['agent']}"
        out.rule(f"{escape(label)} ({member['task_id']}): {member['state']}")
        _print_task(member)


def _explain_report(client: Client, job_id: str) -> dict[str, Any]:
    from agents import explain as recorded
    from agents import tree
    from agents.members import member_key

    app = client.app
    status = client.status(job_id)
    nodes = tree.read(app, job_id)
    ids = [job_id, *(node.task_id for node in nodes)]
    parked = [json.loads(raw) if raw else None for raw in app.backend.client.mget(
        [member_key(task_id) for task_id in ids]
    )]  # fmt: skip
    return {
        "job_id": job_id,
        "state": status.state,
        "model": status.model,
        "error": status.error,
        **_outcome(parked[0] or status.result),
        "decisions": recorded.read(app, job_id),
        "members": [
            {
                "task_id": node.task_id,
                "agent": node.agent,
                "phase": node.phase,
                "index": node.index,
                "parent": node.parent,
                "state": node.info.get("status") or node.state.lower(),
                "model": node.info.get("model"),
                **_outcome(full or node.info),
                "decisions": recorded.read(app, node.task_id),
            }
            for node, full in zip(nodes, parked[1:], strict=True)
        ],
    }


def _outcome(result: dict[str, Any] | None) -> dict[str, Any]:
    # A member's own result is parked in full; its Celery result is only a compact reference.
    result = result or {}
    return {
        "failed_attempts": result.get("failed_attempts", []),
        "cascade": result.get("cascade"),
    }


def _print_task(task: dict[str, Any]) -> None:
    decisions = task["decisions"]
    for number, decision in enumerate(decisions, start=1):
        _print_decision(decision, title=f"decision {number} of {len(decisions)}")
    if task["failed_attempts"]:
        _print_attempts(task["failed_attempts"])
    if task["cascade"]:
        _print_cascade(task["cascade"])


def _print_decision(decision: dict[str, Any], *, title: str) -> None:
    out.print(
        f"[bold]{title}[/bold]: {escape(_where(decision))} ({decision['tier']}), "
        f"{decision['task_kind']} at complexity {decision['complexity']:.2f}, "
        f"expected ${decision['expected_cost_usd']:.6f} (at most ${decision['max_cost_usd']:.6f})"
    )
    out.print(f"  why: {escape(decision['reason'])}")
    for note in decision.get("notes", []):
        out.print(f"  note: {escape(note)}")
    if decision.get("excluded"):
        out.print(f"  excluded (tried before): {escape(', '.join(decision['excluded']))}")
    if decision.get("cascade"):
        out.print(f"  cascade: escalate to {escape(', '.join(decision['cascade']))} if it fails")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("model", "tier", "quality", "exp. cost", "max cost", "latency", "score"):
        table.add_column(column, no_wrap=True, justify="left" if column == "model" else "right")
    for candidate in decision.get("candidates", []):
        name = escape(candidate["model"])
        table.add_row(
            f"[bold]{name} *[/bold]" if candidate["model"] == decision["model"] else name,
            # Marked: a tier inferred from the price, a quality nobody measured (catalog check).
            f"{candidate['tier']}{'*' if candidate.get('tier_source') == 'inferred' else ''}",
            "unknown" if candidate.get("quality_source") == "unknown"
            else f"{candidate['quality']:.2f}",
            f"${candidate['expected_cost_usd']:.6f}", f"${candidate['max_cost_usd']:.6f}",
            f"{candidate['expected_latency_s']:.2f} s {candidate.get('latency_source', 'catalog')}",
            f"{candidate['score']:.3f}",
        )  # fmt: skip
    out.print(table)


def _print_attempts(attempts: list[dict[str, Any]]) -> None:
    table = Table(title="failed attempts", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("#", "model", "tier", "error", "call", "cost", "detail"):
        table.add_column(column, no_wrap=column != "detail")
    for number, attempt in enumerate(attempts, start=1):
        table.add_row(
            str(number), escape(_where(attempt)), str(attempt["tier"]),
            escape(attempt["error_kind"]), "called" if attempt.get("called", True) else "refused",
            f"${attempt.get('cost_usd', 0.0):.6f}", escape(_first_line(attempt.get("error"))),
        )  # fmt: skip
    out.print(table)


def _print_cascade(cascade: dict[str, Any]) -> None:
    first, strong = escape(cascade["first_model"]), escape(cascade["strong_model"])
    if cascade["escalated"]:
        why = escape(_first_line(cascade.get("reason")))
        outcome = f"escalated from {first} to {strong} ({why})"
    else:
        outcome = f"kept {first}'s answer (strong model: {strong})"
    saved = cascade["saved_usd"]
    out.print(
        f"[bold]cascade[/bold]: {outcome}; cost ${cascade['cost_usd']:.6f}, "
        f"{strong} alone ${cascade['strong_only_usd']:.6f}, "
        f"{'saved' if saved >= 0 else 'lost'} ${abs(saved):.6f}"
    )


def _where(record: dict[str, Any]) -> str:
    # "model [deployment]" for a deployment of a model group of several (its key is its id);
    # the model alone where it has one deployment, or the record is older than groups.
    model, deployment = record["model"], record.get("deployment")
    return model if deployment in (None, model) else f"{model} [{deployment}]"


def _first_line(text: str | None) -> str:
    # Provider and validation errors run to many lines; the first says what happened. --json
    # keeps them whole.
    return (text or "").strip().split("\n", 1)[0]
