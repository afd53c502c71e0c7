"""``chordal health``: the image's one HEALTHCHECK, meaning something for each role.

Every Chordal container runs the same image, so the check reads the container's own command
(PID 1's argv) to learn its role, and asks that process's own endpoint:

========== ===================================== =============================================
role       endpoint                              healthy means
========== ===================================== =============================================
worker     ``/metrics`` on CHORDAL_METRICS_PORT   warmed up (catalog, LiteLLM, tokenizer): the
                                                 endpoint starts in ``worker_init``
gateway    ``/healthz`` on ``--port``             the HTTP server answers (``/readyz`` is for
                                                 traffic: it also needs the broker)
exporter   ``/healthz`` on ``--port``             the process answers, whatever the broker does,
                                                 so ChordalBrokerDown can fire meanwhile
simulator  ``/health`` on ``--port``              it serves
flower     ``/healthcheck`` on ``--port``         Flower's own check
========== ===================================== =============================================

Anything else (``chordal bench``, ``submit``, ``--help``) has nothing to probe and counts as
healthy. Exit 0 healthy, 1 not (Docker's HEALTHCHECK contract).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORTS = {"gateway": 8080, "exporter": 9808, "simulator": 8765, "flower": 5555}
PATHS = {
    "worker": "/metrics",
    "gateway": "/healthz",
    "exporter": "/healthz",
    "simulator": "/health",
    "flower": "/healthcheck",
}


@dataclass(frozen=True)
class Probe:
    """What to ask: ``role``'s endpoint at ``url``."""

    role: str
    url: str


def role_of(argv: Sequence[str]) -> str | None:
    """The Chordal role a process's ``argv`` runs, or None for a one-off command."""
    words = [Path(word).name for word in argv]
    if "flower" in words:
        return "flower"
    if "chordal.simulator" in words or "sim" in words:
        return "simulator"
    for role in ("gateway", "exporter", "worker"):
        if role in words:
            return role
    return None


def option(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv`` (the last one wins)."""
    value = None
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith(f"{name}="):
            value = word.split("=", 1)[1]
    return value


def probe_for(argv: Sequence[str], env: Mapping[str, str]) -> Probe | None:
    """The probe for the process that runs ``argv`` with ``env``; None when there is nothing
    to ask (a one-off command, or a worker without a metrics port).

    Raises ValueError for a port that is not a number.
    """
    role = role_of(argv)
    if role is None:
        return None
    if role == "worker":
        raw = env.get("CHORDAL_METRICS_PORT")
        if not raw:
            return None
    elif role == "gateway":
        raw = option(argv, "--port") or env.get("CHORDAL_GATEWAY_PORT")
    else:
        raw = option(argv, "--port")
    port = int(raw) if raw else DEFAULT_PORTS[role]
    return Probe(role, f"http://127.0.0.1:{port}{PATHS[role]}")


def pid1_argv(proc: Path = Path("/proc/1/cmdline")) -> list[str]:
    """The container's command: PID 1's arguments (empty where /proc cannot be read)."""
    try:
        raw = proc.read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def check(probe: Probe, timeout_s: float) -> tuple[bool, str]:
    """Ask ``probe``'s endpoint once: (healthy, a line that says why)."""
    # The URL is always http://127.0.0.1:<port><fixed path>, built above.
    request = urllib.request.Request(probe.url, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # nosec B310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{probe.role}: {probe.url} did not answer ({exc})"
    if 200 <= status < 300:
        return True, f"{probe.role}: {probe.url} answered {status}"
    return False, f"{probe.role}: {probe.url} answered {status}"
