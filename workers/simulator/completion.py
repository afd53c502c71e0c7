"""What a simulated model answers, and the token-count heuristic behind its usage numbers.

Token counts are a heuristic, not a tokenizer: a text costs ceil(chars / 4) tokens, every
message adds 4 tokens of overhead and every non-text content part (e.g. an image) costs 85.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

from workers.simulator.profiles import ModelProfile
from workers.simulator.schema import instance_for

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
NON_TEXT_PART_TOKENS = 85
_FILLER = " [simulated filler]"


def count_tokens(text: str) -> int:
    """Approximate the tokens of ``text``: one per four characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_tokens(messages: Sequence[Any]) -> int:
    """Approximate the prompt tokens of chat ``messages`` (see the module docstring)."""
    total = 0
    for message in messages:
        for part in _parts(message.get("content")):
            text = _part_text(part)
            total += NON_TEXT_PART_TOKENS if text is None else count_tokens(text)
        total += MESSAGE_OVERHEAD_TOKENS
    return total


def completion_object(
    model: str, content: str, *, finish_reason: str, usage: dict[str, int]
) -> dict[str, Any]:
    """Wrap ``content`` in an OpenAI ``chat.completion`` object."""
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
    return {
        "id": f"chatcmpl-sim-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "chordal-simulator",
        "choices": [choice],
        "usage": usage,
    }


def reply(
    body: dict[str, Any], model: str, *, messages: list[dict[str, Any]], profile: ModelProfile
) -> tuple[str, str]:
    """Return the content and finish reason the simulated ``model`` answers ``body`` with."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ValueError("`response_format.json_schema.schema` must be an object")
        return json.dumps(instance_for(schema)), "stop"
    if kind == "json_object":
        note = "simulated response from the Chordal provider simulator"
        return json.dumps({"simulated": True, "model": model, "note": note}), "stop"
    if fmt is not None and kind != "text":
        raise ValueError("`response_format.type` must be text, json_object or json_schema")
    text = _honest_text(model, _last_user_text(messages), tokens=profile.output_tokens)
    limit = _max_tokens(body)
    if limit is not None and limit < profile.output_tokens:
        return text[: limit * CHARS_PER_TOKEN], "length"
    return text, "stop"


def _honest_text(model: str, user_text: str, *, tokens: int) -> str:
    words = len(user_text.split())
    text = (
        f"[simulated] Response from the Chordal provider simulator for model {model}; "
        f"no real model was called. The last user message has {words} words and begins "
        f"{user_text[:80]!r}."
    )
    target = tokens * CHARS_PER_TOKEN
    if len(text) >= target:
        # The disclosure that the answer is simulated is never cut short.
        return text
    repeats = math.ceil((target - len(text)) / len(_FILLER))
    return (text + _FILLER * repeats)[:target]


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{key}` must be a non-negative integer")
        return value
    return None


def _parts(content: Any) -> list[Any]:
    if content is None:
        return []
    return content if isinstance(content, list) else [content]


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and part.get("type") == "text":
        return str(part.get("text", ""))
    return None


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            texts = (_part_text(p) for p in _parts(message.get("content")))
            return " ".join(t for t in texts if t is not None)
    return ""
