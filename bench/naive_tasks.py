"""Baseline B: a plain Celery app whose task calls SYNC ``litellm.completion`` directly.

This is the execution model the issue measured and rejected: every pool slot blocks in a sync
HTTP call. Start a worker with::

    CHORDAL_BENCH_BROKER_URL=redis://... python -m celery -A bench.naive_tasks worker \\
        -P threads -c 200 -Q bench.naive --prefetch-multiplier 1
"""

from __future__ import annotations

import os

import litellm
from celery import Celery

from bench.noop_tasks import BROKER_ENV, plain_app

QUEUE = "bench.naive"
TASK = "bench.naive.complete"
MODEL = "openai/gpt-4.1-mini"
MAX_TOKENS = 16

litellm.suppress_debug_info = True
litellm.telemetry = False


def create_app(broker_url: str) -> Celery:
    """A Celery app on ``broker_url`` (also the result backend) with Chordal's delivery rules."""
    return plain_app(
        "bench-naive",
        broker_url,
        queue=QUEUE,
        # kombu's and redis-py's default pools (10 and 100) stall a pool of hundreds of
        # threads or greenlets acknowledging at once; Chordal's config sizes them too.
        broker_transport_options={"max_connections": 1000},
        redis_max_connections=1000,
    )


app = create_app(os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def complete(api_base: str, text: str) -> int:
    """One blocking completion against ``api_base``; returns the completion tokens."""
    response = litellm.completion(
        model=MODEL,
        api_base=api_base,
        api_key="x",
        messages=[{"role": "user", "content": text}],
        max_tokens=MAX_TOKENS,
        num_retries=0,
    )
    return int(response.usage.completion_tokens)
