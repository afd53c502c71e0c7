"""Flower, Celery's dashboard, as a child process of the local stack.

`chordal dev` starts it next to the workers, behind HTTP basic auth; it reads the same
``CHORDAL_*`` environment as the workers, so it watches the same broker. Only ``/healthcheck``
and ``/metrics`` answer without credentials, by Flower's design.
"""

from __future__ import annotations

import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from chordal.lifecycle import ChildService, check_port_free
from workers.errors import ConfigurationError

# Flower splits FLOWER_BASIC_AUTH on commas (one entry per account); a browser sends
# "user:password", so a user name with a colon could never log in.
_FORBIDDEN_IN_USER = (":", ",")


def make_password() -> str:
    """A random basic-auth password for a dev session (URL-safe, no ``:`` or ``,``)."""
    return secrets.token_urlsafe(18)


class Flower(ChildService):
    """Flower on ``127.0.0.1:port``; use with ``with`` or call :meth:`start` / :meth:`stop`.

    The credentials travel in ``FLOWER_BASIC_AUTH`` rather than on the command line, so they do
    not show in ``ps`` output.
    """

    name = "Flower"
    ready_timeout_s = 30.0

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        port: int,
        user: str,
        password: str,
        log_dir: Path,
    ) -> None:
        if not 0 < port < 65536:
            raise ConfigurationError(f"Flower needs a TCP port in 1-65535, got {port}")
        if not user or any(char in user for char in _FORBIDDEN_IN_USER):
            raise ConfigurationError(
                f"set CHORDAL_FLOWER_USER to a name without ':' or ',' (got {user!r})"
            )
        if not password or "," in password:
            raise ConfigurationError("set CHORDAL_FLOWER_PASSWORD to a non-empty value without ','")
        self.env = dict(env)
        self.port = port
        self.user = user
        self.password = password
        super().__init__(log_dir / "flower.log")

    @property
    def url(self) -> str:
        """Where the dashboard answers (credentials not included)."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """``celery --app workers.app flower`` with Chordal's options."""
        return [
            sys.executable, "-m", "celery", "--app", "workers.app", "flower",
            f"--port={self.port}",
            "--address=127.0.0.1",
            # A dev dashboard starts empty each run; nothing would read a saved state file.
            "--persistent=False",
        ]  # fmt: skip

    def before_start(self) -> None:
        """Refuse a port in use."""
        check_port_free(self.port, "set CHORDAL_FLOWER_PORT (0 turns Flower off)")

    def child_env(self) -> dict[str, str]:
        """The stack's environment, and the credentials where ``ps`` does not show them."""
        return {**self.env, "FLOWER_BASIC_AUTH": f"{self.user}:{self.password}"}

    def ready(self) -> bool:
        """Whether Flower answers its health check."""
        return self.healthy()

    def healthy(self) -> bool:
        """Whether ``/healthcheck`` answers 200 ``OK`` (it needs no credentials)."""
        try:
            with urllib.request.urlopen(f"{self.url}/healthcheck", timeout=1.0) as response:  # nosec B310 # our own http://127.0.0.1 URL
                return bool(response.status == 200 and response.read() == b"OK")
        except (urllib.error.URLError, OSError):
            return False
