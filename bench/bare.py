"""Baseline A: bare ``litellm.acompletion`` calls on one asyncio loop, in its own process.

Run by :mod:`bench.concurrency` as ``python -m bench.bare`` (row c's ceiling), and by
:mod:`bench.floor` at concurrency 1 (row b's LLM call alone); prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import litellm

from chordal.simulator.admin import SimulatorAdmin

MODEL = "openai/gpt-4.1-mini"
MAX_TOKENS = 16

litellm.suppress_debug_info = True
litellm.telemetry = False


@dataclass(frozen=True)
class Target:
    """Where the calls go and what they ask for."""

    api_base: str
    model: str = MODEL
    max_tokens: int = MAX_TOKENS


async def one_call(target: Target, n: int) -> float | None:
    """One completion against the simulator: its seconds when it answered, else None."""
    started = time.perf_counter()
    try:
        await litellm.acompletion(
            model=target.model,
            api_base=target.api_base,
            api_key="x",
            messages=[{"role": "user", "content": f"Summarise benchmark call {n}."}],
            max_tokens=target.max_tokens,
            num_retries=0,
        )
    except Exception:  # a failed call is counted, not fatal: the bench reports errors
        return None
    return time.perf_counter() - started


async def run_calls(target: Target, calls: int, concurrency: int) -> tuple[list[float], float]:
    """Make ``calls`` calls, at most ``concurrency`` at once; returns (answered calls' seconds,
    wall seconds)."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(n: int) -> float | None:
        async with gate:
            return await one_call(target, n)

    started = time.perf_counter()
    answered = await asyncio.gather(*(gated(n) for n in range(calls)))
    return [s for s in answered if s is not None], time.perf_counter() - started


def _ms(seconds: Sequence[float], q: int) -> float | None:
    if len(seconds) < 2:
        return round(seconds[0] * 1000, 3) if seconds else None
    return round(statistics.quantiles(seconds, n=100, method="inclusive")[q - 1] * 1000, 3)


async def measure(
    sim_url: str, calls: int, concurrency: int, warmup: int, *, model: str = MODEL,
    max_tokens: int = MAX_TOKENS,
) -> dict[str, Any]:  # fmt: skip
    """Warm LiteLLM up, then time ``calls`` calls and read the simulator's in-flight peak."""
    admin = SimulatorAdmin(sim_url)
    target = Target(f"{sim_url}/v1", model=model, max_tokens=max_tokens)
    # The first calls build LiteLLM's HTTP client and import provider modules; a Chordal worker
    # has paid that before it is measured too.
    if warmup:
        await run_calls(target, warmup, concurrency)
    admin.reset_stats()
    cpu = time.process_time()
    answered, wall = await run_calls(target, calls, concurrency)
    cpu = time.process_time() - cpu
    return {
        "calls": calls,
        "ok": len(answered),
        "errors": calls - len(answered),
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_in_flight": admin.peak_in_flight(),
        # Each answered call from its start to its answer (after the semaphore): at
        # concurrency 1, what one LiteLLM call costs in time with nothing else running.
        "call_p50_ms": _ms(answered, 50),
        "call_p95_ms": _ms(answered, 95),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``python -m bench.bare --sim URL --calls N --concurrency C``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--sim", required=True, help="simulator base URL, without /v1")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--model", default=MODEL, help="LiteLLM model string")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.sim, args.calls, args.concurrency, args.warmup,
                                 model=args.model, max_tokens=args.max_tokens))  # fmt: skip
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
