"""A client for the simulator's admin API, for tests, benchmarks and chaos drills.

Standard library only, so a load generator can drive faults without pulling in an HTTP stack.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class SimulatorAdmin:
    """Drive a running simulator: change faults, read and reset its counters."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        # Accept the URL LiteLLM is given (``…/v1``) as well as the server root.
        self.root = base_url.rstrip("/").removesuffix("/v1")
        if urllib.parse.urlsplit(self.root).scheme not in ("http", "https"):
            raise ValueError(f"the simulator's URL must be http(s)://, got {base_url!r}")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.root + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        # The scheme is http(s): checked in __init__.
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # nosec B310
            return json.loads(response.read())

    def healthy(self) -> bool:
        """True once the simulator answers ``/health``."""
        try:
            return bool(self._call("GET", "/health").get("status") == "ok")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def config(self) -> dict[str, Any]:
        """The configuration in force."""
        return dict(self._call("GET", "/admin/config"))

    def fault(self, model: str, **changes: Any) -> dict[str, Any]:
        """Change ``model``'s profile (``"*"``: every model) at run time; returns the profile."""
        return dict(self._call("PATCH", "/admin/faults", {"model": model, "changes": changes}))

    def reset(self) -> None:
        """Back to the start-up configuration, counters zeroed."""
        self._call("POST", "/admin/reset", {})

    def stats(self, window_s: float | None = None) -> dict[str, Any]:
        """Global and per-model counters.

        With ``window_s`` each model also reports ``max_in_window`` and ``max_accepted_in_window``:
        the most requests that arrived (respectively were admitted by its rate limit) within any
        sliding window of ``window_s`` seconds.
        """
        query = "" if window_s is None else "?" + urllib.parse.urlencode({"window_s": window_s})
        return dict(self._call("GET", "/admin/stats" + query))

    def reset_stats(self) -> None:
        """Zero the counters, keeping the faults."""
        self._call("POST", "/admin/stats/reset", {})

    def peak_in_flight(self) -> int:
        """Most requests the simulator held at once since the last reset."""
        return int(self.stats()["peak_in_flight"])
