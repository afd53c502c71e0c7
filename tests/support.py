"""Helpers for the integration tests: settings for a private stack, the simulator's admin API."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from workers.settings import Settings

# Catalog latencies (0.7-12 s) scaled down so a job takes milliseconds, not seconds.
LATENCY_SCALE = 0.02


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
    }
    values.update(overrides)
    return Settings(**values)


class Simulator:
    """The simulator's admin API, for driving faults from a test."""

    def __init__(self, base_url: str) -> None:
        self.admin = base_url.removesuffix("/v1") + "/admin"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.admin + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def fault(self, model: str, **changes: Any) -> Any:
        """Change ``model``'s profile at run time."""
        return self._call("PATCH", "/faults", {"model": model, "changes": changes})

    def stats(self) -> dict[str, Any]:
        """Per-model request counters."""
        return self._call("GET", "/stats")  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Back to the start-up profiles, counters zeroed."""
        self._call("POST", "/reset", {})

    def reset_stats(self) -> None:
        """Zero the counters, keeping the faults."""
        self._call("POST", "/stats/reset", {})
