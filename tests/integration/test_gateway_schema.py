"""Schemathesis against the gateway's own /openapi.json: no generated request answers 5xx.

Every operation the schema lists gets generated requests (valid and invalid bodies, ids and
headers) with a valid key, against a gateway on the session stack. A 4xx is the gateway turning
bad input away; a 5xx is a bug. Only that check runs: the schema does not list the shared error
shape's 401, 404, 409, 413 and 429, so the conformance checks would report those instead.

The `st run` command line rather than `schemathesis.pytest.from_fixture`: that loader sets
``request.node._nodeid``, which pytest 9 no longer has (a schema known only once a fixture has
started the gateway needs it).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chordal.broker import free_port
from chordal.gateway.keys import new_key
from chordal.gateway.service import GatewayService
from chordal.stack import LocalStack

pytestmark = pytest.mark.integration

KEY = new_key()


@pytest.fixture(scope="module")
def gateway_url(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # High enough that generated submits are judged on their content, not turned away as 429.
    env = {**stack.env(), "CHORDAL_GATEWAY_RATE_LIMIT": "10000/second"}
    logs = tmp_path_factory.mktemp("gateway-schema")
    with GatewayService(env=env, port=free_port(), keys={KEY: "fuzz"}, log_dir=logs) as running:
        yield running.url
    # Hundreds of requests carried the key, some malformed around it: none logged any of it.
    text = (logs / "gateway.log").read_text()
    assert KEY not in text
    assert KEY[4:20] not in text


def schemathesis_run(
    schema_url: str, workdir: Path, *, phases: str, examples: int
) -> subprocess.CompletedProcess[str]:
    """``st run`` of ``phases`` over every operation of ``schema_url`` with a valid key; it
    exits non-zero on a 5xx (or on a request that got no answer)."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", schema_url,
        "--checks", "not_a_server_error",
        "--header", f"Authorization: Bearer {KEY}",
        # The key above, not a generated one, so requests get past authentication.
        "--generation-with-security-parameters", "false",
        "--phases", phases,
        "--max-examples", str(examples),
        "--request-timeout", "30",
        "--generation-database", "none",
        "--no-color",
    ]  # fmt: skip
    # cwd: its .schemathesis and .hypothesis directories stay out of the working tree. The
    # timeout is under the test's, so a hung run fails here, naming the command.
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=240, check=False
    )


# Single requests: 100 generated per operation (a few seconds in all).
SINGLE = "examples,coverage,fuzzing"
# Sequences along the links schemathesis infers (submit, then read, follow or cancel that job).
# Each one that follows a job's events waits for the job to end, so one scenario costs a job's
# run: 128 scenarios took 28 s to 67 s here and over 90 s once in CI, hence fewer.
STATEFUL = "stateful"


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("phases", "examples"), [(SINGLE, 100), (STATEFUL, 20)])
def test_no_generated_request_makes_the_gateway_answer_5xx(
    gateway_url: str, tmp_path: Path, phases: str, examples: int
) -> None:
    run = schemathesis_run(
        f"{gateway_url}/openapi.json", tmp_path, phases=phases, examples=examples
    )

    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
