"""The local model server's lifecycle, with stand-ins for llama.cpp (the real one runs in
tests/integration/test_local_tier.py)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from chordal import local_model
from chordal.local_model import MODEL_ALIAS, LocalModelServer, bundled_model_path
from workers.errors import ConfigurationError

# Answers /v1/models as llama.cpp's server does, on the port given as its only argument.
FAKE_SERVER = textwrap.dedent(
    """
    import http.server, json, sys

    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "smollm2"}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.end_headers()
            self.wfile.write(body)

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Models).serve_forever()
    """
)


class StandIn(LocalModelServer):
    """A LocalModelServer that runs ``script`` instead of llama.cpp's server."""

    def __init__(self, script: str, *, log_dir: Path) -> None:
        super().__init__(log_dir=log_dir, model_path=log_dir / "model.gguf")
        self.script = script

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script, str(self.port)]


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the `local` extra is installed."""
    monkeypatch.setattr(local_model, "server_available", lambda: True)


def test_command_serves_the_model_file_under_its_alias_on_loopback(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    server = LocalModelServer(log_dir=tmp_path, model_path=model, port=4321)

    command = server.command()

    assert command[1:3] == ["-m", "llama_cpp.server"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options == {
        "--model": str(model),
        "--model_alias": MODEL_ALIAS,
        "--host": "127.0.0.1",
        "--port": "4321",
        "--n_ctx": "2048",
    }
    assert server.url == "http://127.0.0.1:4321/v1"


@pytest.mark.usefixtures("installed")
def test_start_waits_for_the_model_to_be_listed_and_stop_ends_it(tmp_path: Path) -> None:
    server = StandIn(FAKE_SERVER, log_dir=tmp_path)

    with server:
        assert server.alive()
        assert server.models() == ["smollm2"]

    assert not server.alive()
    assert server.models() == []
    server.stop()  # twice is fine


@pytest.mark.usefixtures("installed")
def test_a_server_that_exits_at_start_fails_with_its_log(tmp_path: Path) -> None:
    server = StandIn("import sys; print('no such model file'); sys.exit(3)", log_dir=tmp_path)

    with pytest.raises(ConfigurationError, match=r"exited with 3:\n.*no such model file"):
        server.start()

    assert not server.alive()


def test_without_the_extra_start_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_model, "server_available", lambda: False)

    with pytest.raises(ConfigurationError, match=r"pip install -e '\.\[local\]'"):
        LocalModelServer(log_dir=tmp_path).start()


def test_without_the_model_package_its_path_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_model.importlib.util, "find_spec", lambda _name: None)

    with pytest.raises(ConfigurationError, match=r"no SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        bundled_model_path()
    assert local_model.server_available() is False
