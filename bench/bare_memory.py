"""Row g's baseline: memory of a bare asyncio loop holding N ``litellm.acompletion`` calls.

Run by :mod:`bench.memory` as ``python -m bench.bare_memory``: warms LiteLLM up on a model that
answers at once, reads its own RSS, then opens ``--calls`` calls to ``--hold-model`` (which the
caller made slow in the simulator), waits until the simulator holds them all, reads its RSS
again, prints one JSON object and exits without waiting for the calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence

import litellm

from bench import rss
from chordal.simulator.admin import SimulatorAdmin

WARM_MODEL = "openai/gpt-4.1-mini"
MAX_TOKENS = 16
RAMP_TIMEOUT_S = 120.0

litellm.suppress_debug_info = True
litellm.telemetry = False


async def _call(api_base: str, model: str, n: int) -> None:
    await litellm.acompletion(
        model=model, api_base=api_base, api_key="x", max_tokens=MAX_TOKENS, num_retries=0,
        messages=[{"role": "user", "content": f"Summarise benchmark call {n}."}],
    )  # fmt: skip


async def measure(sim_url: str, calls: int, hold_model: str, warmup: int) -> dict[str, object]:
    """RSS before and with ``calls`` calls in flight."""
    admin = SimulatorAdmin(sim_url)
    api_base = f"{sim_url}/v1"
    await asyncio.gather(*(_call(api_base, WARM_MODEL, n) for n in range(warmup)))
    await asyncio.sleep(1.0)
    idle = rss.sample("self")
    before = (await asyncio.to_thread(admin.stats))["in_flight"]
    held = [asyncio.create_task(_call(api_base, f"openai/{hold_model}", n)) for n in range(calls)]
    deadline = time.monotonic() + RAMP_TIMEOUT_S
    in_flight = 0
    while time.monotonic() < deadline:
        in_flight = (await asyncio.to_thread(admin.stats))["in_flight"] - before
        if in_flight >= calls:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    loaded = await asyncio.to_thread(rss.sample, "self")
    return {"calls": calls, "in_flight": in_flight, "idle": idle, "loaded": loaded,
            "pending": sum(not task.done() for task in held)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.bare_memory --sim URL --calls N --hold-model NAME``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_memory", description=__doc__)
    parser.add_argument("--sim", required=True, help="simulator base URL, without /v1")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--hold-model", required=True)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    loop = asyncio.new_event_loop()
    report = loop.run_until_complete(measure(args.sim, args.calls, args.hold_model, args.warmup))
    print(json.dumps(report), flush=True)
    sys.stdout.flush()
    # The held calls would keep the loop (and this process) alive for the simulator's latency.
    os._exit(0)


if __name__ == "__main__":
    main()
