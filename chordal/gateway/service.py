"""The gateway as a child process: ``chordal dev`` starts it, and so do the tests.

``chordal dev`` makes an API key for the session (tenant ``default``) and gives the gateway only
its digest, so the dev gateway runs the same authenticated path as a deployed one.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from chordal.gateway.keys import digest, new_key
from chordal.lifecycle import ChildService, check_port_free


class GatewayService(ChildService):
    """``chordal gateway`` on ``127.0.0.1:port``; ``keys`` maps each API key to its tenant."""

    name = "the gateway"
    ready_timeout_s = 60.0

    def __init__(
        self, *, env: Mapping[str, str], port: int, keys: Mapping[str, str], log_dir: Path
    ) -> None:
        self.env = dict(env)
        self.port = port
        self.keys = dict(keys)
        super().__init__(log_dir / "gateway.log")

    @classmethod
    def for_dev(cls, *, env: Mapping[str, str], port: int, log_dir: Path) -> GatewayService:
        """A gateway with one fresh key for tenant ``default``."""
        return cls(env=env, port=port, keys={new_key(): "default"}, log_dir=log_dir)

    @property
    def url(self) -> str:
        """Where the gateway answers."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """``chordal gateway`` on this port."""
        return [sys.executable, "-m", "chordal.cli", "gateway", "--host", "127.0.0.1",
                "--port", str(self.port)]  # fmt: skip

    def before_start(self) -> None:
        """Refuse a port in use."""
        check_port_free(self.port, "set CHORDAL_GATEWAY_PORT (0 turns the gateway off)")

    def child_env(self) -> dict[str, str]:
        """The stack's environment, plus the keys' digests (never the keys)."""
        configured = json.loads(self.env.get("CHORDAL_GATEWAY_KEYS") or "{}")
        digests = {**configured, **{digest(key): tenant for key, tenant in self.keys.items()}}
        return {**self.env, "CHORDAL_GATEWAY_KEYS": json.dumps(digests)}

    def ready(self) -> bool:
        """Whether ``/healthz`` answers 200."""
        try:
            url = f"{self.url}/healthz"  # our own http://127.0.0.1 URL
            with urllib.request.urlopen(url, timeout=1.0) as response:  # nosec B310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False
