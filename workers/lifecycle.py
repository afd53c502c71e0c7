"""A component started and stopped around a ``with`` block, and the child processes behind it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, Self


class Service:
    """Subclasses implement :meth:`start` (returning self) and :meth:`stop`."""

    def start(self) -> Self:
        """Start the component; returns it once ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the component; safe to call twice."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_group(process: subprocess.Popen[Any], *, timeout_s: float = 10.0) -> None:
    """SIGTERM a child started with ``start_new_session``, and its children; SIGKILL them
    after ``timeout_s``. A process already gone is nothing to stop."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def tail(log: Path, lines: int = 30) -> str:
    """The last lines of a child's log, for error messages."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
