"""Row c: calls per second of one tier worker process at each concurrency, against baselines.

The scenarios are :mod:`bench.concurrency`'s own (its :class:`~bench.concurrency.Bench`): a bare
``litellm.acompletion`` loop, Chordal's tier worker, and naive Celery workers calling sync
``litellm.completion`` on a threads or gevent pool, all on one simulator at a fixed latency, one
process at a time. Each level runs twice its concurrency in calls (at least ``calls``, at most
``max_calls``; the naive pools ``naive_calls``), so that the steady state outweighs the ramp.
Targets at c=500: at least 0.8x bare asyncio, at least 2x the better naive pool.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.concurrency import Bench, progress
from bench.procs import BenchError
from bench.report import BARE, Row, markdown_table, set_ratios
from bench.suite_report import Part, ratio

CHORDAL = "chordal-tier-worker"
CHORDAL_P2 = "chordal-tier-worker-p2"
TARGET_LEVEL = 500
VS_BARE = 0.8
VS_NAIVE = 2.0
P2_VS_P1 = 1.6
SIM_HEADROOM = 2.0


@dataclass(frozen=True)
class Plan:
    """Levels, calls per level (at least the level), latency, naive pools and their levels."""

    levels: Sequence[int]
    calls: int
    max_calls: int
    latency_s: float
    pools: Sequence[str]
    naive_levels: Sequence[int]
    naive_calls: int = 600
    warmup: int = 10
    # Levels where the worker also runs as ``--processes 2`` (the level split between them).
    processes_levels: Sequence[int] = ()


def target_level(levels: Sequence[int]) -> int:
    """The level the targets are checked at: c=500, or the highest run without it."""
    return TARGET_LEVEL if TARGET_LEVEL in levels else max(levels)


def _pools(pools: Sequence[str], notes: list[str]) -> list[str]:
    usable = []
    for pool in pools:
        if pool == "gevent" and importlib.util.find_spec("gevent") is None:
            notes.append("gevent is not installed: naive-gevent skipped")
        else:
            usable.append(pool)
    return usable


def run_scaling(workdir: Path, plan: Plan) -> tuple[Part, list[Row]]:
    """Every scenario at every level; returns row c and the rows (for the plot)."""
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(calls=plan.calls, latency=plan.latency_s, warmup=plan.warmup, workdir=workdir)
    rows: list[Row] = []
    try:
        bench.start()
        pools = _pools(plan.pools, bench.notes)
        for level in plan.levels:
            bench.calls = max(plan.calls, min(2 * level, plan.max_calls))
            scenarios: list[tuple[str, Callable[[int], Row]]] = [
                (BARE, bench.bare),
                (CHORDAL, bench.chordal),
            ]
            if level in plan.processes_levels:
                scenarios.append((CHORDAL_P2, partial(bench.chordal, processes=2)))
            if level in plan.naive_levels:
                scenarios += [(f"naive-{p}", partial(bench.naive, p)) for p in pools]
            for name, scenario in scenarios:
                if name.startswith("naive-"):
                    # The naive pools hold at most ~100 calls (LiteLLM's sync HTTP client):
                    # fewer calls reach their steady state, and they are the slow ones.
                    bench.calls = min(bench.calls, max(plan.naive_calls, plan.calls))
                progress(f"c: {name} at concurrency {level}, {bench.calls} calls")
                try:
                    rows.append(scenario(level))
                except BenchError as exc:
                    # A baseline falling over is a finding: noted, the others still run.
                    bench.notes.append(f"{name} c={level} FAILED: {str(exc).splitlines()[0]}")
    finally:
        bench.stop()
    set_ratios(rows)
    return _part(plan, rows, bench.notes), rows


def _simulator_ceiling(part: Part, rows: list[Row]) -> None:
    # Requirement: the simulator must not be what limits row c. It runs in its own process;
    # its CPU per call (the dearest scenario's) bounds what one simulator process can serve.
    measured = [row for row in rows if row.sim_cpu_ms_per_call]
    if not measured:
        part.notes.append("simulator CPU not measured (no /proc): its ceiling is not reported")
        return
    dearest = max(row.sim_cpu_ms_per_call or 0.0 for row in measured)
    ceiling = 1000 / dearest
    fastest = max(rows, key=lambda row: row.ok / row.wall_s)
    fastest_per_s = fastest.ok / fastest.wall_s
    headroom = ratio(ceiling, fastest_per_s)
    part.add(
        "simulator CPU per call (its own process, dearest scenario)", dearest, "ms",
        compared=f"ceiling ≈ {ceiling:,.0f} calls/s on one core = {headroom:.1f}x the fastest "
        f"scenario ({fastest.scenario} c={fastest.concurrency}, {fastest_per_s:.1f} calls/s)",
        target=f"not the bottleneck (≥ {SIM_HEADROOM:.0f}x)",
        met=headroom >= SIM_HEADROOM,
    )  # fmt: skip


def _answered(row: Row) -> float:
    return row.ok / row.wall_s if row.wall_s > 0 else 0.0


def _verdicts(part: Part, by: dict[tuple[str, int], Row], target: int | None) -> None:
    # The JSON report's named ratios (answered calls, as the figures above).
    for level, name in ((target, "c500_vs_bare"), (1000, "c1000_vs_bare")):
        chordal, bare = by.get((CHORDAL, level or -1)), by.get((BARE, level or -1))
        if chordal is not None and bare is not None:
            part.verdicts[name] = ratio(_answered(chordal), _answered(bare))
    chordal, bare = by.get((CHORDAL, target or -1)), by.get((BARE, target or -1))
    naive = [r for (name, lvl), r in by.items() if name.startswith("naive-") and lvl == target]
    if chordal is not None and naive:
        best = max(_answered(row) for row in naive)
        part.verdicts["c500_vs_naive"] = ratio(_answered(chordal), best)
    if (
        chordal is not None
        and bare is not None
        and chordal.cpu_ms_per_call
        and (bare.cpu_ms_per_call)
    ):
        part.verdicts["cpu_per_call_vs_bare"] = ratio(chordal.cpu_ms_per_call,
                                                      bare.cpu_ms_per_call)  # fmt: skip


def _processes(part: Part, by: dict[tuple[str, int], Row], plan: Plan) -> None:
    for level in plan.processes_levels:
        one, two = by.get((CHORDAL, level)), by.get((CHORDAL_P2, level))
        if one is None or two is None:
            part.notes.append(f"--processes 2 at c={level}: not measured in this run")
            continue
        times = ratio(_answered(two), _answered(one))
        checked = level == TARGET_LEVEL
        part.add(
            f"tier worker --processes 2 at c={level} ({level // 2} each)", _answered(two),
            "calls/s", compared=f"{times:.2f}x one process ({_answered(one):.1f})",
            target=f"≥ {P2_VS_P1}x one process" if checked else "",
            met=times >= P2_VS_P1 and not two.errors if checked else None,
        )  # fmt: skip
        if checked:
            part.verdicts["processes2_vs_1"] = times


def _part(plan: Plan, rows: list[Row], notes: list[str]) -> Part:
    part = Part("c", f"Tier worker throughput at {plan.latency_s:g} s simulated latency")
    by = {(row.scenario, row.concurrency): row for row in rows}
    target = target_level(plan.levels)
    checked = target == TARGET_LEVEL
    chordal = by.get((CHORDAL, target))
    bare = by.get((BARE, target))
    naive = [
        row for (name, level), row in by.items() if name.startswith("naive-") and level == target
    ]
    if chordal is not None and bare is not None:
        # Answered calls only: a failed call is quick, and would flatter the worker.
        answered = chordal.ok / chordal.wall_s
        vs_bare = ratio(answered, bare.ok / bare.wall_s)
        failed = f"; {chordal.errors} of {chordal.calls} failed" if chordal.errors else ""
        part.add(
            f"tier worker answered calls/s at c={target}", answered, "calls/s",
            compared=f"{vs_bare:.2f}x bare asyncio ({bare.ok / bare.wall_s:.1f}){failed}",
            target=f"≥ {VS_BARE}x bare" if checked else "",
            met=vs_bare >= VS_BARE and not chordal.errors if checked else None,
        )  # fmt: skip
    if chordal is not None and naive:
        best = max(naive, key=lambda row: row.ok / row.wall_s)
        vs_naive = ratio(chordal.ok / chordal.wall_s, best.ok / best.wall_s)
        part.add(
            f"tier worker vs better naive pool at c={target}", vs_naive, "x",
            compared=f"{best.scenario} {best.ok / best.wall_s:.1f} answered calls/s",
            target=f"≥ {VS_NAIVE:.0f}x naive" if checked else "",
            met=vs_naive >= VS_NAIVE if checked else None,
        )  # fmt: skip
    elif checked:
        part.notes.append(f"no naive pool finished at c={target}: no comparison with them")
    _verdicts(part, by, target if checked else None)
    _processes(part, by, plan)
    _simulator_ceiling(part, rows)
    for level in plan.levels:
        row = by.get((CHORDAL, level))
        if row is not None and level != target:
            part.add(f"tier worker calls/s at c={level}", row.calls_per_s, "calls/s",
                     compared=f"{row.ratio_vs_bare or 0:.2f}x bare asyncio")  # fmt: skip
    if not checked:
        part.notes.append(f"c={TARGET_LEVEL} not run: no verdict")
    part.table = markdown_table(rows)
    part.details = {
        "latency_s": plan.latency_s,
        "calls": {row.concurrency: row.calls for row in rows},
        "levels": list(plan.levels),
        "naive_levels": list(plan.naive_levels),
        "rows": [row.as_json() for row in rows],
    }
    part.notes += [
        *notes,
        *(f"{r.scenario} c={r.concurrency}: {r.errors} failed, first: {r.first_error}"
          for r in rows if r.errors),
        "wall s runs from the first publish to the last result; CPU ms/call is the measured "
        "process's own CPU (bench.concurrency's method, see its section below)",
        "the tier worker runs with --loglevel WARNING, as the naive workers do",
    ]  # fmt: skip
    return part
