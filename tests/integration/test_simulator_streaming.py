"""Streamed answers: the simulator in OpenAI's chunk format, read through Chordal's LiteLLM call."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from chordal.simulator import SimConfig
from routing.catalog import Model
from routing.llm import complete
from tests.integration.simulator_support import FAST, SimServer
from workers.tiers import Tier

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Items? .*ReadOnly:UserWarning"),
]
MESSAGES = [{"role": "user", "content": "Plan a trip to Lisbon."}]


class Sink:
    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.closed = False

    async def send(self, text: str) -> None:
        assert not self.closed
        self.pieces.append(text)

    async def close(self) -> None:
        self.closed = True


def model_on(server: SimServer) -> Model:
    return Model(
        name="gpt-4.1-mini", tier=Tier.FAST,
        litellm_params={"model": "openai/gpt-4.1-mini", "api_base": f"{server.url}/v1",
                        "api_key": "sim"},
        price_model="gpt-4.1-mini", input_cost_per_token=4e-7, output_cost_per_token=1.6e-6,
        context_window=100_000, max_output_tokens=4_096,
        expected_latency_s=1.0, quality_by_kind={"general": 0.5},
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_a_streamed_call_gives_the_same_completion_piece_by_piece(start_simulator) -> None:
    server = start_simulator(SimConfig(default=FAST))
    model, sink = model_on(server), Sink()

    plain = asyncio.run(complete(model, MESSAGES, max_tokens=200, timeout=10))
    streamed = asyncio.run(complete(model, MESSAGES, max_tokens=200, timeout=10, tokens=sink))

    assert len(sink.pieces) > 3
    assert sink.closed
    assert "".join(sink.pieces) == streamed.content == plain.content
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        plain.prompt_tokens, plain.completion_tokens,
    )  # fmt: skip
    assert streamed.cost_usd == plain.cost_usd > 0
    assert streamed.finish_reason == "stop"


@pytest.mark.timeout(60)
def test_the_simulator_streams_openai_chunks_then_usage_then_done(start_simulator) -> None:
    server = start_simulator(SimConfig(default=FAST))

    async def read() -> list[str]:
        body = {"model": "gpt-4.1-mini", "messages": MESSAGES, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{server.url}/v1/chat/completions", json=body) as response,
        ):
            assert response.headers["Content-Type"].startswith("text/event-stream")
            return [line.decode().strip() async for line in response.content if line.strip()]

    lines = asyncio.run(read())

    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0
