"""Helpers for the integration tests: settings for a private stack, the simulator's admin API."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.client import Client
from routing.catalog import Model
from workers.settings import Settings
from workers.tiers import Tier

# Catalog latencies (0.7-12 s) scaled down so a job takes milliseconds, not seconds.
LATENCY_SCALE = 0.02
TEST_TEAMS = Path(__file__).parent / "integration" / "teams.yaml"
# A LiteLLM proxy config with a mistake in each of two entries: a worker must refuse it, naming
# each entry and field.
LITELLM_CONFIG_INVALID = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
    model_info:
      tier: gold
  - model_name: claude-sonnet
    litellm_params:
      api_key: os.environ/ANTHROPIC_API_KEY
      rpm: 60
    model_info:
      id: sonnet-1
      rpm: -5
litellm_settings:
  drop_params: true
"""
# A LiteLLM proxy config with nothing Chordal can route to: an embedding model, an Azure
# deployment LiteLLM cannot price (no base_model) and a wildcard. Loading it is an error that
# names each entry skipped and why.
LITELLM_CONFIG_UNROUTABLE = """
model_list:
  - model_name: embedding
    litellm_params:
      model: openai/text-embedding-3-small
      api_key: os.environ/OPENAI_API_KEY
  - model_name: gpt-4o
    litellm_params:
      model: azure/my-gpt-4o-deployment
      api_base: https://example.openai.azure.com
      api_key: os.environ/AZURE_API_KEY
  - model_name: "*"
    litellm_params:
      model: "*"
router_settings:
  routing_strategy: simple-shuffle
"""


def stack_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a private test stack (no broker URL: the stack starts its own Valkey)."""
    values: dict[str, Any] = {
        "broker_url": None,
        "result_backend": None,
        "profile": "offline",
        "data_dir": data_dir,
        "sim_latency_scale": LATENCY_SCALE,
        "tier_concurrency": 256,
        "llm_timeout_s": 20.0,
        "agents_path": TEST_TEAMS,
    }
    values.update(overrides)
    return Settings(**values)


def scaled_catalog(path: Path, *, scale: float, limits: dict[str, dict[str, int]]) -> Path:
    """Write the default catalog with every latency scaled by ``scale`` (so the router's seeds
    match what the simulator serves) and ``limits`` (rpm/tpm) added per model; return ``path``."""
    import yaml

    from routing.catalog import default_catalog_path

    raw = yaml.safe_load(default_catalog_path().read_text())
    for entry in raw["model_list"]:
        info = entry["model_info"]
        info["expected_latency_s"] = round(info["expected_latency_s"] * scale, 4)
        info.update(limits.get(entry["model_name"], {}))
    path.write_text(yaml.safe_dump(raw))
    return path


# One priced, rate-limited model for the fleet tests (routing.fleet).
FLEET_MODEL = Model(
    name="m",
    tier=Tier.FAST,
    litellm_params={"model": "openai/m"},
    price_model="m",
    input_cost_per_token=1e-6,
    output_cost_per_token=4e-6,
    context_window=100_000,
    max_output_tokens=1_000,
    expected_latency_s=1.0,
    quality_by_kind={"general": 0.5},
    rpm=2,
)
FLEET_CALL = {"prompt_tokens": 1_000, "max_tokens": 1_000, "job_budget_usd": None}  # worst $0.005


def stack_report(stack: Any, redis_client: Any, *, log_lines: int = 40) -> str:
    """What a failing integration test prints about its stack: the broker's lists and kombu's
    unacked entries (task and id), the workers' heartbeats and held hashes, the leases, and the
    tail of each component's log. So a rare failure in CI says where the job stopped."""
    import json

    lines: list[str] = []
    for raw in sorted(redis_client.keys("*")):
        key = raw.decode()
        kind = redis_client.type(key).decode()
        if kind == "list":
            lines.append(f"list {key!r}: {redis_client.llen(key)}")
        elif key.startswith("chordal:run:"):
            lines.append(f"{key} = {redis_client.get(key)!r} ttl={redis_client.pttl(key)}ms")
        elif key.startswith(("chordal:held:", "chordal:calls:")) or key == "chordal:workers":
            lines.append(f"{kind} {key}: {_members(redis_client, key, kind)}")
    for tag, entry in redis_client.hgetall("unacked").items():
        payload = json.loads(entry)[0]
        payload = json.loads(payload) if isinstance(payload, str) else payload
        headers = payload.get("headers", {})
        lines.append(f"unacked {tag.decode()}: {headers.get('task')} {headers.get('id')}")
    for child in stack.children:
        lines.append(f"--- {child.name} (exit {child.process.poll()})\n{child.tail(log_lines)}")
    return "\n".join(lines)


def _members(redis_client: Any, key: str, kind: str) -> object:
    if kind == "zset":
        return redis_client.zrange(key, 0, -1, withscores=True)
    if kind == "hash":
        return redis_client.hgetall(key)
    return redis_client.lrange(key, 0, -1) if kind == "list" else kind


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not met within {timeout} s: {what}")


def close_client(client: Client) -> None:
    """Close the app and the Client's own pools (claims, events): a socket left for the
    garbage collector fails whichever later test it is collected in."""
    client.app.close()
    for name in ("claims", "events"):
        if name in vars(client):
            getattr(client, name).client.connection_pool.disconnect()
