"""The provider simulator over real HTTP, driven by aiohttp and by real LiteLLM calls."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp
import litellm
import pytest
from pydantic import BaseModel, Field

from chordal.simulator import ModelProfile, SimConfig
from tests.integration.simulator_support import (
    FAST,
    SimServer,
    admin_request,
    complete,
    post_chat,
)

pytestmark = [
    pytest.mark.integration,
    # LiteLLM lazily imports its GitHub Copilot module on the first call, and pydantic warns
    # about that module's ReadOnly TypedDict; the warning is LiteLLM's, not ours.
    pytest.mark.filterwarnings("ignore:Items? .*ReadOnly:UserWarning"),
]

ROOT = Path(__file__).resolve().parents[2]


class Priority(StrEnum):
    """Priority of a plan."""

    LOW = "low"
    HIGH = "high"


class Step(BaseModel):
    """One step of a plan."""

    title: str
    minutes: int = Field(ge=5)
    tags: list[str]


class Plan(BaseModel):
    """Structured output the simulator must satisfy."""

    goal: str = Field(min_length=3)
    priority: Priority
    steps: list[Step]
    attempts: int = Field(ge=3)
    due: datetime | None


@pytest.mark.timeout(60)
def test_litellm_gets_an_openai_shaped_honest_completion(start_simulator) -> None:
    server = start_simulator(SimConfig(default=FAST))

    response = asyncio.run(complete(server))

    content = response.choices[0].message.content
    assert content.startswith("[simulated]")
    assert "gpt-4.1-mini" in content
    assert "Plan a trip to Lisbon." in content
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == 48
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


@pytest.mark.timeout(60)
def test_max_tokens_truncates_with_finish_reason_length(start_simulator) -> None:
    server = start_simulator(SimConfig(default=FAST))

    response = asyncio.run(complete(server, max_tokens=5))

    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5


@pytest.mark.timeout(60)
def test_pydantic_response_format_round_trips(start_simulator) -> None:
    server = start_simulator(SimConfig(default=FAST))

    response = asyncio.run(complete(server, response_format=Plan))

    plan = Plan.model_validate_json(response.choices[0].message.content)
    assert plan.steps
    assert plan.attempts >= 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"rate_limit_rate": 1.0}, litellm.RateLimitError),
        ({"error_rate": 1.0}, litellm.InternalServerError),
        ({"outage": True}, litellm.ServiceUnavailableError),
        ({"context_window": 3}, litellm.ContextWindowExceededError),
    ],
)
def test_faults_surface_as_litellm_errors(start_simulator, changes, error) -> None:
    server = start_simulator(SimConfig(default=FAST.model_copy(update=changes)))

    with pytest.raises(error):
        asyncio.run(complete(server))


@pytest.mark.timeout(60)
def test_rate_limit_carries_retry_after(start_simulator) -> None:
    profile = FAST.model_copy(update={"rate_limit_rate": 1.0, "retry_after_s": 7})
    server = start_simulator(SimConfig(default=profile))

    async def scenario() -> tuple[int, dict[str, str], Any]:
        async with aiohttp.ClientSession() as session:
            return await post_chat(session, server, model="gpt-5")

    status, headers, body = asyncio.run(scenario())

    assert status == 429
    assert headers["Retry-After"] == "7"
    assert body["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.timeout(60)
def test_timeout_fault_makes_litellm_time_out(start_simulator) -> None:
    profile = FAST.model_copy(update={"timeout_rate": 1.0, "hang_s": 20.0})
    server = start_simulator(SimConfig(default=profile))

    with pytest.raises(litellm.Timeout):
        asyncio.run(complete(server, timeout=0.5))


@pytest.mark.timeout(60)
def test_admin_patch_changes_behaviour_and_rejects_bad_values(start_simulator) -> None:
    server = start_simulator(SimConfig(default=FAST))

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            assert (await post_chat(session, server, model="gpt-5"))[0] == 200
            status, body = await admin_request(
                server, "PATCH /admin/faults", body={"model": "gpt-5", "changes": {"error_rate": 1}}
            )
            assert status == 200
            assert body["profile"]["error_rate"] == 1.0
            assert (await post_chat(session, server, model="gpt-5"))[0] == 500
            assert (await post_chat(session, server, model="other-model"))[0] == 200

            status, body = await admin_request(
                server, "PATCH /admin/faults", body={"model": "*", "changes": {"error_rate": 1.5}}
            )
            assert status == 400
            assert "error_rate" in body["error"]["message"]
            status, body = await admin_request(
                server, "PATCH /admin/faults", body={"model": "*", "changes": {"colour": "red"}}
            )
            assert status == 400
            assert "colour" in body["error"]["message"]

            _, config = await admin_request(server, "GET /admin/config")
            assert config["models"]["gpt-5"]["error_rate"] == 1.0
            assert (await admin_request(server, "POST /admin/reset"))[0] == 200
            assert (await post_chat(session, server, model="gpt-5"))[0] == 200

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_stats_count_outcomes_tokens_and_jobs(start_simulator) -> None:
    profile = FAST.model_copy(update={"rate_limit_rate": 1.0})
    slow = FAST.model_copy(update={"latency_median_s": 0.5})
    server = start_simulator(SimConfig(default=FAST, models={"limited": profile, "slow": slow}))

    async def scenario() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            job = {"X-Chordal-Job": "job-1"}
            await post_chat(session, server, model="gpt-5", headers=job)
            await post_chat(session, server, model="gpt-5", headers=job)
            await post_chat(session, server, model="limited")
            # A caller that hangs up before the answer is not billed for it.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await post_chat(session, server, model="slow", headers=job)
            await asyncio.sleep(0.8)
        return (await admin_request(server, "GET /admin/stats"))[1]

    stats = asyncio.run(scenario())

    assert stats["requests"] == 4
    assert stats["in_flight"] == 0
    assert stats["jobs"] == {"job-1": 3}
    assert stats["answered"] == {"job-1": 2}
    assert stats["models"]["gpt-5"]["ok"] == 2
    assert stats["models"]["gpt-5"]["completion_tokens"] == 96
    assert stats["models"]["limited"]["rate_limited"] == 1
    assert asyncio.run(admin_request(server, "POST /admin/stats/reset"))[0] == 200
    assert asyncio.run(admin_request(server, "GET /admin/stats"))[1]["requests"] == 0


@pytest.mark.timeout(60)
def test_models_and_health_endpoints(start_simulator) -> None:
    server = start_simulator(SimConfig(models={"gpt-5": FAST, "gemini/gemini-2.5-flash": FAST}))

    _, models = asyncio.run(admin_request(server, "GET /v1/models"))
    _, health = asyncio.run(admin_request(server, "GET /health"))

    assert [m["id"] for m in models["data"]] == ["gemini/gemini-2.5-flash", "gpt-5"]
    assert health == {"status": "ok", "simulated": True}


def _outcomes(server: SimServer, count: int) -> list[tuple[int, str, str]]:
    async def scenario() -> list[tuple[int, str, str]]:
        seen = []
        async with aiohttp.ClientSession() as session:
            for index in range(count):
                model = "gpt-5" if index % 3 else "gemini/gemini-2.5-flash"
                status, headers, _ = await post_chat(session, server, model=model)
                seen.append(
                    (status, headers["X-Chordal-Sim-Seq"], headers["X-Chordal-Sim-Latency"])
                )
        return seen

    return asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_same_seed_and_sequence_give_same_outcomes(start_simulator) -> None:
    flaky = ModelProfile(latency_median_s=0.2, error_rate=0.3, rate_limit_rate=0.2)
    config = SimConfig(seed=11, default=flaky, latency_scale=0.01)

    first = _outcomes(start_simulator(config), 40)
    second = _outcomes(start_simulator(config), 40)
    other_seed = _outcomes(start_simulator(config.model_copy(update={"seed": 12})), 40)

    assert first == second
    assert {status for status, _, _ in first} == {200, 429, 500}
    assert first != other_seed


@pytest.mark.timeout(60)
def test_serves_500_concurrent_requests(start_simulator) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    server = start_simulator(SimConfig(default=ModelProfile(latency_median_s=1.0, latency_sigma=0)))

    async def scenario() -> list[int]:
        connector = aiohttp.TCPConnector(limit=600)
        async with aiohttp.ClientSession(connector=connector) as session:
            replies = await asyncio.gather(
                *(post_chat(session, server, model="gpt-5") for _ in range(500))
            )
        return [status for status, _, _ in replies]

    statuses = asyncio.run(scenario())
    stats = asyncio.run(admin_request(server, "GET /admin/stats"))[1]

    assert statuses == [200] * 500
    assert stats["peak_in_flight"] >= 500
    assert stats["models"]["gpt-5"]["ok"] == 500
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def run_cli() -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    """Factory: start ``python -m chordal.simulator`` and return it with its base URL."""
    processes: list[subprocess.Popen[str]] = []

    def run(*args: str) -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "chordal.simulator", "--port", "0", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        return process, line.rsplit(" ", 1)[-1].strip()

    yield run
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.timeout(60)
def test_command_line_serves_and_stops_on_sigterm(run_cli, tmp_path) -> None:
    config_file = tmp_path / "sim.yaml"
    config_file.write_text("seed: 3\nmodels:\n  gpt-5:\n    outage: true\n", encoding="utf-8")
    process, url = run_cli("--config", str(config_file), "--latency-scale", "0.5")

    async def scenario() -> tuple[dict[str, Any], int]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/admin/config") as response:
                config = await response.json()
            async with session.post(
                f"{url}/v1/chat/completions",
                json={"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]},
            ) as response:
                return config, response.status

    config, status = asyncio.run(scenario())
    process.terminate()

    assert config["seed"] == 3
    assert config["latency_scale"] == 0.5
    assert status == 503
    assert process.wait(10) == 0
