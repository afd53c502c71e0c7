"""A component started and stopped around a ``with`` block, and the child processes behind it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from workers.errors import ConfigurationError

STOP_TIMEOUT_S = 10.0


def check_port_free(port: int, hint: str) -> None:
    """Raise ConfigurationError (with ``hint``) if ``port`` is taken on 127.0.0.1: whatever holds
    it would answer a child's readiness check for it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigurationError(f"port {port} is in use; {hint}") from exc


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


class ChildService(Service):
    """A service that is one child process, in its own process group, logging to ``log``.

    Subclasses name it, give its :meth:`command` and a :meth:`ready` check, and may check
    something first (:meth:`before_start`) or give the child an environment (:meth:`child_env`).
    """

    name = "the child process"
    ready_timeout_s = 30.0
    poll_s = 0.1

    def __init__(self, log: Path) -> None:
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the service answers."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """The child's command line."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the started child serves yet."""
        raise NotImplementedError

    def before_start(self) -> None:
        """Raise ConfigurationError if the child cannot start here."""

    def child_env(self) -> dict[str, str] | None:
        """The child's environment (None: this process's)."""
        return None

    def start(self) -> Self:
        """Start the child and wait until :meth:`ready`; raises ConfigurationError."""
        if self._process is not None:
            return self
        self.before_start()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self._process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, env=self.child_env(),
                start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                msg = f"{self.name} exited with {self._process.returncode}:\n{self.tail()}"
                raise ConfigurationError(msg)
            if self.ready():
                return
            time.sleep(self.poll_s)
        msg = f"{self.name} did not answer on {self.url} within {self.ready_timeout_s} s"
        raise ConfigurationError(f"{msg}:\n{self.tail()}")

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self._process is not None and self._process.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The last lines of the log, for error messages."""
        return tail(self.log, lines)

    def stop(self) -> None:
        """SIGTERM the child's process group, SIGKILL after 10 s; safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            stop_group(process, timeout_s=STOP_TIMEOUT_S)


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
