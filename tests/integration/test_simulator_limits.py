"""The simulator's provider rate limits (rpm, tpm) and its sliding-window stats, over HTTP."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import litellm
import pytest

from chordal.simulator import SimConfig
from chordal.simulator.admin import SimulatorAdmin
from tests.integration.simulator_support import FAST, admin_request, chats, complete, post_chat

pytestmark = [
    pytest.mark.integration,
    # LiteLLM lazily imports its GitHub Copilot module on the first call, and pydantic warns
    # about that module's ReadOnly TypedDict; the warning is LiteLLM's, not ours.
    pytest.mark.filterwarnings("ignore:Items? .*ReadOnly:UserWarning"),
]

GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def _limited(**fields: Any) -> SimConfig:
    return SimConfig(default=FAST, models={"limited": FAST.model_copy(update=fields)})


@pytest.mark.timeout(60)
def test_rpm_refuses_the_request_over_the_limit_until_a_slot_frees(start_simulator) -> None:
    server = start_simulator(_limited(rpm=3, rate_window_s=1.0))

    replies = chats(server, 4, model="limited")
    _, headers, body = replies[-1]

    assert [r[0] for r in replies] == [200, 200, 200, 429]
    assert headers["Retry-After"] == "1"
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "requests"
    assert "Limit 3, Used 3" in body["error"]["message"]
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert GO_DURATION.match(headers["x-ratelimit-reset-requests"])
    assert "x-ratelimit-limit-tokens" not in headers
    assert not any(h.startswith("x-ratelimit") for h in chats(server, 1)[0][1])

    time.sleep(1.0)

    assert chats(server, 1, model="limited")[0][0] == 200


@pytest.mark.timeout(60)
def test_remaining_requests_count_down(start_simulator) -> None:
    server = start_simulator(_limited(rpm=5, rate_window_s=30.0))

    replies = chats(server, 6, model="limited")

    remaining = [headers["x-ratelimit-remaining-requests"] for _, headers, _ in replies]
    assert remaining == ["4", "3", "2", "1", "0", "0"]
    assert [status for status, _, _ in replies] == [200] * 5 + [429]
    assert 29 <= int(replies[-1][1]["Retry-After"]) <= 30
    assert re.match(r"^(29\.\d+|30)s$", replies[0][1]["x-ratelimit-reset-requests"])
    with pytest.raises(litellm.RateLimitError):
        asyncio.run(complete(server, model="limited"))


@pytest.mark.timeout(60)
def test_tpm_charges_prompt_plus_expected_output(start_simulator) -> None:
    # "hi" costs 1 + 4 prompt tokens; the profile answers 48 tokens: 53 per request.
    server = start_simulator(_limited(tpm=120, rate_window_s=30.0))

    first, second, over = chats(server, 3, model="limited")
    capped = chats(server, 1, model="limited", max_tokens=5)[0]

    assert [first[0], second[0], over[0], capped[0]] == [200, 200, 429, 200]
    assert [r[1]["x-ratelimit-remaining-tokens"] for r in (first, second, over, capped)] == [
        "67",
        "14",
        "14",
        "4",
    ]
    assert first[1]["x-ratelimit-limit-tokens"] == "120"
    assert GO_DURATION.match(first[1]["x-ratelimit-reset-tokens"])
    assert "x-ratelimit-limit-requests" not in first[1]
    assert over[2]["error"]["type"] == "tokens"
    assert 29 <= int(over[1]["Retry-After"]) <= 30


@pytest.mark.timeout(60)
def test_limits_are_patched_at_run_time(start_simulator) -> None:
    server = start_simulator(SimConfig(default=FAST))
    admin = SimulatorAdmin(f"{server.url}/v1")

    assert [r[0] for r in chats(server, 3)] == [200, 200, 200]
    profile = admin.fault("gpt-5", rpm=2, tpm=1000, rate_window_s=30.0)
    limited = chats(server, 3)
    admin.fault("gpt-5", rpm=None, tpm=None)
    unlimited = chats(server, 1)[0]

    assert (profile["profile"]["rpm"], profile["profile"]["rate_window_s"]) == (2, 30.0)
    assert [r[0] for r in limited] == [200, 200, 429]
    assert limited[0][1]["x-ratelimit-remaining-tokens"] == str(1000 - 53)
    assert unlimited[0] == 200
    assert not any(h.startswith("x-ratelimit") for h in unlimited[1])
    status, body = asyncio.run(
        admin_request(server, "PATCH /admin/faults", body={"model": "*", "changes": {"rpm": 0}})
    )
    assert status == 400
    assert "rpm" in body["error"]["message"]


@pytest.mark.timeout(60)
def test_max_in_window_counts_every_arrival_in_any_sliding_window(start_simulator) -> None:
    server = start_simulator(_limited(rpm=3, rate_window_s=30.0))
    admin = SimulatorAdmin(server.url)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            for burst in (2, 2, 1):
                for _ in range(burst):
                    await post_chat(session, server)
                await asyncio.sleep(0.6)
            for _ in range(5):
                await post_chat(session, server, model="limited")

    asyncio.run(scenario())
    wide, second, half = (admin.stats(window_s=w)["models"] for w in (10, 1.0, 0.5))

    assert [m["gpt-5"]["max_in_window"] for m in (wide, second, half)] == [5, 4, 2]
    assert wide["gpt-5"]["max_accepted_in_window"] == 5
    assert wide["limited"]["max_in_window"] == 5
    assert wide["limited"]["max_accepted_in_window"] == 3
    assert wide["limited"]["over_limit"] == 2
    assert "max_in_window" not in admin.stats()["models"]["gpt-5"]
    status, body = asyncio.run(admin_request(server, "GET /admin/stats?window_s=-1"))
    assert status == 400
    assert "window_s" in body["error"]["message"]
