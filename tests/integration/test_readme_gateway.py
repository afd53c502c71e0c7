"""The README's gateway examples, run as written against a gateway on the session stack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chordal.broker import free_port
from chordal.cli.stack import write_env_file
from chordal.gateway.keys import new_key
from chordal.gateway.service import GatewayService
from chordal.stack import LocalStack

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def example(marker: str) -> str:
    """The code block that follows ``<!-- marker -->`` in the README."""
    found = re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)```", README.read_text(), re.DOTALL)
    assert found, f"no {marker} example in the README"
    return found.group(1)


@pytest.fixture(scope="module")
def dev_env(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder whose .chordal/dev.env is what `chordal dev` writes, for a running gateway."""
    folder = tmp_path_factory.mktemp("readme")
    key = new_key()
    with GatewayService(env=stack.env(), port=free_port(), keys={key: "default"},
                        log_dir=folder) as gateway:  # fmt: skip
        write_env_file(folder / ".chordal" / "dev.env",
                       {"CHORDAL_GATEWAY_URL": gateway.url, "CHORDAL_API_KEY": key})  # fmt: skip
        yield folder


def test_the_curl_example_streams_a_job_and_reads_its_result(dev_env: Path) -> None:
    script = example("readme-gateway-curl")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=dev_env,
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    assert run.returncode == 0, run.stderr
    events, _, status = run.stdout.rpartition("\n\n")
    assert "event: token" in events
    assert "event: state" in events
    assert json.loads(status)["state"] == "SUCCESS"


def test_the_python_example_runs_a_team_job(dev_env: Path) -> None:
    env_lines = (dev_env / ".chordal" / "dev.env").read_text().splitlines()
    env = dict(line.removeprefix("export ").split("=", 1) for line in env_lines)
    run = subprocess.run([sys.executable, "-c", example("readme-gateway-python")],
                         env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         timeout=90, check=False)  # fmt: skip

    assert run.returncode == 0, run.stderr
    first = run.stdout.splitlines()[0]
    assert first.startswith("SUCCESS ")
    assert "researcher" in first
