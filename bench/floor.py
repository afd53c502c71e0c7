"""What a missed target is made of, from figures measured in the same run.

* CPU per message of a worker process (from ``/proc``): raw Celery's no-op worker (row a), the
  router and tier worker of a Chordal job (row b);
* one bare LiteLLM call at a time against row b's own simulator and model: how much of a job's
  round trip is the LLM call itself;
* row c's one-process ceiling, *derived*: what a tier worker would sustain if it cost only raw
  Celery's CPU per task plus the bare loop's CPU per call.

A derived figure is labelled so, and only computed when every input was measured in this run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bench.procs import BenchError, Child, Children, child_env, last_json_line
from bench.report import BARE, Row
from bench.scaling import CHORDAL
from bench.suite_report import Part, ratio

if TYPE_CHECKING:
    from workers.settings import Settings

Phase = Literal["one_at_a_time", "batch"]
PHASES: dict[Phase, str] = {"one_at_a_time": "one at a time", "batch": "in the batch"}


@dataclass(frozen=True)
class CpuPerMessage:
    """CPU milliseconds one worker process spent per message, one at a time and in a batch."""

    worker: str
    one_at_a_time_ms: float | None = None
    batch_ms: float | None = None

    def in_phase(self, phase: Phase) -> float | None:
        """Milliseconds per message in ``phase``."""
        return self.one_at_a_time_ms if phase == "one_at_a_time" else self.batch_ms

    def as_json(self) -> dict[str, Any]:
        """The figures, rounded."""
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class CpuMeter:
    """CPU per message of some worker processes, phase by phase (``None`` off Linux)."""

    workers: dict[str, Child]
    ms: dict[tuple[str, Phase], float | None] = field(default_factory=dict)

    @contextmanager
    def phase(self, phase: Phase, messages: int) -> Iterator[None]:
        """Charge the workers' CPU inside the block to ``messages`` messages."""
        before = {name: child.cpu_s() for name, child in self.workers.items()}
        yield
        for name, child in self.workers.items():
            start, end = before[name], child.cpu_s()
            per = None
            if start is not None and end is not None and messages > 0:
                per = (end - start) * 1000 / messages
            self.ms[(name, phase)] = per

    def per_message(self) -> tuple[CpuPerMessage, ...]:
        """One entry per worker."""
        return tuple(
            CpuPerMessage(name, self.ms.get((name, "one_at_a_time")), self.ms.get((name, "batch")))
            for name in self.workers
        )


def ms(value: float | None) -> str:
    """A CPU figure for a sentence: two decimals, or "n/a"."""
    return f"{value:.2f}" if value is not None else "n/a"


def add_cpu_figures(
    part: Part, cpu: Sequence[CpuPerMessage], *, per: str, phase: Phase,
    floor: CpuPerMessage | None = None,
) -> None:  # fmt: skip
    """One summary figure per worker: its CPU per ``per`` in ``phase``, the other phase and
    raw Celery's (``floor``, same phase) alongside."""
    other: Phase = "batch" if phase == "one_at_a_time" else "one_at_a_time"
    for entry in cpu:
        value = entry.in_phase(phase)
        if value is None:
            part.notes.append(f"{entry.worker}: CPU not measured (no /proc)")
            continue
        compared = f"{PHASES[other]} {ms(entry.in_phase(other))} ms/{per}"
        if floor is not None:
            compared += f"; raw Celery worker {ms(floor.in_phase(phase))} ms/task (a)"
        part.add(f"{entry.worker} CPU per {per}, {PHASES[phase]}", value, "ms", compared=compared)


@dataclass(frozen=True)
class JobCall:
    """The LLM call a row-b job made: its catalog model and output budget."""

    model: str
    max_tokens: int


@dataclass(frozen=True)
class BareCall:
    """One bare ``litellm.acompletion`` at a time against a simulator model, in its own process."""

    model: str
    litellm_model: str
    max_tokens: int
    calls: int
    ok: int
    p50_ms: float
    p95_ms: float


def bare_call(
    children: Children, settings: Settings, call: JobCall, *, calls: int, warmup: int
) -> BareCall:
    """Time ``calls`` bare LiteLLM calls one at a time (``bench.bare`` at concurrency 1) against
    the simulator and model of ``settings``' stack; its own process, so it has a core to itself
    as the stack's tier worker had."""
    from chordal.simulator.admin import SimulatorAdmin
    from routing.catalog import catalog_for
    from routing.llm import model_cost_map

    model = catalog_for(settings, model_cost=model_cost_map()).get(call.model)
    litellm_model = str(model.litellm_params["model"])
    root = SimulatorAdmin(settings.simulator_url).root
    args = ["-m", "bench.bare", "--sim", root, "--calls", str(calls)]
    args += ["--concurrency", "1", "--warmup", str(warmup), "--model", litellm_model]
    args += ["--max-tokens", str(call.max_tokens)]
    child = children.spawn("bare-c1", args, child_env())
    timeout = 60.0 + calls * 0.5
    try:
        child.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"bench.bare still running after {timeout:.0f} s") from exc
    finally:
        children.stop(child)
    if child.process.returncode != 0:
        raise BenchError(f"bench.bare exited with {child.process.returncode}:\n{child.tail()}")
    result = last_json_line(child)
    if not result["ok"]:
        raise BenchError(f"no bare LiteLLM call answered:\n{child.tail()}")
    return BareCall(
        model=call.model, litellm_model=litellm_model, max_tokens=call.max_tokens, calls=calls,
        ok=int(result["ok"]), p50_ms=float(result["call_p50_ms"]),
        p95_ms=float(result["call_p95_ms"]),
    )  # fmt: skip


# Issue #14's targets for Chordal's own share of a job, in raw Celery round trips (row a).
OWN_SHARE_TARGET = 2.0
PINNED_OWN_SHARE_TARGET = 1.2


def explain_job(
    part: Part,
    bare: BareCall,
    *,
    job_p50_ms: float,
    pinned_p50_ms: float | None,
    floor_p50_ms: float | None,
) -> None:
    """Row b: the job's p50 less one bare LiteLLM call is what Chordal and Celery cost, for an
    unpinned job (through the router) and for one pinned to its tier (no router hop)."""
    rest = _own_share(part, "job", job_p50_ms, bare, floor_p50_ms, target=OWN_SHARE_TARGET,
                      verdict="b_own_share_vs_raw")  # fmt: skip
    if pinned_p50_ms is not None:
        _own_share(part, "pinned job", pinned_p50_ms, bare, floor_p50_ms,
                   target=PINNED_OWN_SHARE_TARGET, verdict="b_pinned_own_share_vs_raw")  # fmt: skip
    times = f" = {ratio(rest, floor_p50_ms):.2f}x the floor (a)" if floor_p50_ms else ""
    part.notes.append(
        f"job p50 = {job_p50_ms:.1f} ms, of which the LLM call alone (bare LiteLLM, same "
        f"simulator) {bare.p50_ms:.2f} ms; Chordal + Celery {rest:.1f} ms{times}. The bare call: "
        f"{bare.ok} of {bare.calls} `litellm.acompletion` one at a time on one asyncio loop in "
        f"its own process (`bench.bare`), model {bare.litellm_model}, max_tokens "
        f"{bare.max_tokens}, a one-line user message (the job adds its agent's system prompt); "
        f"p95 {bare.p95_ms:.2f} ms"
    )
    part.details["bare_litellm_call"] = {**asdict(bare), "chordal_and_celery_ms": round(rest, 3)}
    if floor_p50_ms:
        part.details["bare_litellm_call"]["chordal_and_celery_vs_floor"] = ratio(rest, floor_p50_ms)


def _own_share(
    part: Part,
    what: str,
    p50_ms: float,
    bare: BareCall,
    floor_p50_ms: float | None,
    *,
    target: float,
    verdict: str,
) -> float:
    rest = p50_ms - bare.p50_ms
    times = ratio(rest, floor_p50_ms) if floor_p50_ms else None
    part.add(
        f"{what} p50 less one bare LiteLLM call (Chordal + Celery)", rest, "ms",
        compared=f"{what} p50 {p50_ms:.1f} ms less bare LiteLLM call p50 {bare.p50_ms:.2f} ms"
        f" (same simulator and model)" + (f" = {times:.2f}x the floor (a)" if times else ""),
        target=f"≤ {target:g}x (a)" if times is not None else "",
        met=None if times is None else times <= target,
    )  # fmt: skip
    if times is not None:
        part.verdicts[verdict] = times
    return rest


def add_ceiling(part: Part, rows: Sequence[Row], *, level: int, celery_ms: float | None) -> None:
    """Row c: the tier worker's CPU per call beside raw Celery's and the bare loop's, and the
    one-process ceiling they imply (derived, labelled so); a note instead when an input is
    missing from this run."""
    by = {(row.scenario, row.concurrency): row for row in rows}
    bare, tier = by.get((BARE, level)), by.get((CHORDAL, level))
    bare_ms = bare.cpu_ms_per_call if bare is not None else None
    tier_ms = tier.cpu_ms_per_call if tier is not None else None
    inputs = {
        "raw Celery CPU per task (row a, throughput batch)": celery_ms,
        f"bare loop CPU per call at c={level}": bare_ms,
        f"tier worker CPU per call at c={level}": tier_ms,
    }
    missing = [name for name, value in inputs.items() if value is None]
    if tier_ms is not None:
        compared = f"bare loop {ms(bare_ms)} ms/call"
        if celery_ms is not None:
            compared += f"; raw Celery worker {ms(celery_ms)} ms/task (a)"
        part.add(f"tier worker CPU per call at c={level}", tier_ms, "ms", compared=compared)
    if bare is None or bare_ms is None or celery_ms is None or tier_ms is None:
        part.notes.append(
            "derived one-process ceiling left out: not measured in this run: " + ", ".join(missing)
        )
        return
    ceiling = 1000 / (celery_ms + bare_ms)
    bare_per_s = bare.ok / bare.wall_s if bare.wall_s > 0 else 0.0
    own = tier_ms - celery_ms - bare_ms
    part.add(
        "derived (not measured): one-process ceiling if a tier worker cost only raw Celery's "
        "CPU per task + the bare loop's CPU per call", ceiling, "calls/s",
        compared=f"1000 / ({celery_ms:.2f} + {bare_ms:.2f}) = {ratio(ceiling, bare_per_s):.2f}x "
        f"bare asyncio measured at c={level} ({bare_per_s:.1f}); tier worker {tier_ms:.1f} "
        f"ms/call = raw Celery {celery_ms:.1f} + bare LiteLLM {bare_ms:.1f} + Chordal's own "
        f"{own:.1f}",
    )  # fmt: skip
    part.notes.append(
        "derived line (arithmetic on this run's figures, not a measurement): a process on one "
        "core serves at most 1000 / (CPU ms per call) calls/s; raw Celery's CPU per task is row "
        "a's no-op worker in its throughput batch, the bare loop's per call is this row's, and "
        "Chordal's own share is the tier worker's less both (its INFO logging, noted above, "
        "included)"
    )
    part.details["derived_ceiling"] = {
        "level": level,
        "celery_cpu_ms_per_task": round(celery_ms, 3),
        "bare_cpu_ms_per_call": round(bare_ms, 3),
        "tier_cpu_ms_per_call": round(tier_ms, 3),
        "chordal_own_cpu_ms_per_call": round(own, 3),
        "ceiling_calls_per_s": round(ceiling, 1),
        "ceiling_vs_bare": ratio(ceiling, bare_per_s),
    }
