"""Streamed answers in OpenAI's format: ``chat.completion.chunk`` objects as Server-Sent Events.

A request with ``"stream": true`` gets its answer as chunks of a few words, spread over the part
of the sampled latency left after the first token, then a last chunk with ``finish_reason``,
a usage chunk when ``stream_options.include_usage`` asks for it (as OpenAI sends it: no
choices), and ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

# The share of a streamed call's latency spent before the first token.
FIRST_TOKEN_SHARE = 0.3
_PIECES = re.compile(r"\S+\s*|\s+")
WORDS_PER_CHUNK = 3


def chunk_object(
    chunk_id: str, model: str, *, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    return {
        "id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model, "system_fingerprint": "chordal-simulator", "choices": [choice],
    }  # fmt: skip


def pieces(content: str) -> list[str]:
    """``content`` cut into chunks of a few words (joined, they are ``content``)."""
    words = _PIECES.findall(content)
    return ["".join(words[i : i + WORDS_PER_CHUNK]) for i in range(0, len(words), WORDS_PER_CHUNK)]


async def stream(
    request: web.Request,
    completion: Mapping[str, Any],
    *,
    body: Mapping[str, Any],
    spread_s: float,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Send ``completion`` (a ``chat.completion`` object) as chunks over ``spread_s``."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
    await response.prepare(request)
    model = str(completion["model"])
    chunk_id = f"chatcmpl-sim-{uuid.uuid4().hex}"
    choice = completion["choices"][0]
    parts = pieces(str(choice["message"]["content"] or ""))
    pause = spread_s / max(1, len(parts))

    async def send(data: Mapping[str, Any]) -> None:
        await response.write(f"data: {json.dumps(data)}\n\n".encode())

    await send(chunk_object(chunk_id, model, delta={"role": "assistant", "content": ""}))
    for part in parts:
        await asyncio.sleep(pause)
        await send(chunk_object(chunk_id, model, delta={"content": part}))
    await send(chunk_object(chunk_id, model, delta={}, finish_reason=choice["finish_reason"]))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {**chunk_object(chunk_id, model, delta={}), "choices": [],
                 "usage": completion["usage"]}  # fmt: skip
        await send(usage)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
