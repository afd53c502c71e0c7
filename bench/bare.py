"""Baseline A: bare ``litellm.acompletion`` calls on one asyncio loop, in its own process.

Run by :mod:`bench.concurrency` as ``python -m bench.bare``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import litellm

from workers.simulator.admin import SimulatorAdmin

MODEL = "openai/gpt-4.1-mini"
MAX_TOKENS = 16

litellm.suppress_debug_info = True
litellm.telemetry = False


async def one_call(api_base: str, n: int) -> bool:
    """One completion against the simulator; True when it answered."""
    try:
        await litellm.acompletion(
            model=MODEL,
            api_base=api_base,
            api_key="x",
            messages=[{"role": "user", "content": f"Summarise benchmark call {n}."}],
            max_tokens=MAX_TOKENS,
            num_retries=0,
        )
    except Exception:  # a failed call is counted, not fatal: the bench reports errors
        return False
    return True


async def run_calls(api_base: str, calls: int, concurrency: int) -> tuple[int, float]:
    """Make ``calls`` calls, at most ``concurrency`` at once; returns (answered, wall seconds)."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(n: int) -> bool:
        async with gate:
            return await one_call(api_base, n)

    started = time.perf_counter()
    answered = await asyncio.gather(*(gated(n) for n in range(calls)))
    return sum(answered), time.perf_counter() - started


async def measure(sim_url: str, calls: int, concurrency: int, warmup: int) -> dict[str, Any]:
    """Warm LiteLLM up, then time ``calls`` calls and read the simulator's in-flight peak."""
    admin = SimulatorAdmin(sim_url)
    api_base = f"{sim_url}/v1"
    # The first calls build LiteLLM's HTTP client and import provider modules; a Chordal worker
    # has paid that before it is measured too.
    if warmup:
        await run_calls(api_base, warmup, concurrency)
    admin.reset_stats()
    cpu = time.process_time()
    ok, wall = await run_calls(api_base, calls, concurrency)
    cpu = time.process_time() - cpu
    return {
        "calls": calls,
        "ok": ok,
        "errors": calls - ok,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_in_flight": admin.peak_in_flight(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``python -m bench.bare --sim URL --calls N --concurrency C``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--sim", required=True, help="simulator base URL, without /v1")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.sim, args.calls, args.concurrency, args.warmup))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
