"""What a simulated model answers, and the token-count heuristic behind its usage numbers.

Token counts are a heuristic, not a tokenizer: a text costs ceil(chars / 4) tokens, every
message adds 4 tokens of overhead and every non-text content part (e.g. an image) costs 85.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chordal.simulator.profiles import Malformation, ModelProfile
from chordal.simulator.schema import instance_for

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


def requested_tokens(
    body: dict[str, Any], *, messages: Sequence[Any], profile: ModelProfile
) -> int:
    """Tokens a request is charged against a tpm limit: its prompt plus the most it may produce.

    Like a real provider this is an estimate made on arrival: ``max_tokens`` capped at the
    profile's ``output_tokens`` (an invalid ``max_tokens`` is ignored; the request fails later).
    """
    try:
        limit = _max_tokens(body)
    except ValueError:
        limit = None
    produced = profile.output_tokens if limit is None else min(limit, profile.output_tokens)
    return prompt_tokens(messages) + produced


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


@dataclass(frozen=True)
class Reply:
    """What a simulated model answers; ``malformed``: the content breaks the requested schema."""

    content: str
    finish_reason: str
    malformed: bool = False


def reply(
    body: dict[str, Any],
    model: str,
    *,
    messages: list[dict[str, Any]],
    profile: ModelProfile,
    malformed: Malformation | None = None,
) -> Reply:
    """Return what the simulated ``model`` answers ``body`` with.

    A JSON-schema ``response_format`` gets an instance of the schema carrying the profile's
    ``json_overrides``, unless ``malformed`` says how to break it.
    """
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ValueError("`response_format.json_schema.schema` must be an object")
        return _structured(schema, model, overrides=profile.json_overrides, malformed=malformed)
    if kind == "json_object":
        note = "simulated response from the Chordal provider simulator"
        return Reply(json.dumps({"simulated": True, "model": model, "note": note}), "stop")
    if fmt is not None and kind != "text":
        raise ValueError("`response_format.type` must be text, json_object or json_schema")
    text = _honest_text(model, _last_user_text(messages), tokens=profile.output_tokens)
    limit = _max_tokens(body)
    if limit is not None and limit < profile.output_tokens:
        return Reply(text[: limit * CHARS_PER_TOKEN], "length")
    return Reply(text, "stop")


def _structured(
    schema: dict[str, Any],
    model: str,
    *,
    overrides: Mapping[str, Any],
    malformed: Malformation | None,
) -> Reply:
    instance = instance_for(schema)
    if isinstance(instance, dict):
        # The instance carries every property the schema declares, so this skips unknown keys.
        instance.update({key: value for key, value in overrides.items() if key in instance})
    text = json.dumps(instance)
    if malformed is None:
        return Reply(text, "stop")
    if malformed == "truncated":
        cut = text[: len(text) // 2]
        # Only a short scalar (``10`` -> ``1``) can survive the cut as valid JSON.
        if not _parses(cut):
            return Reply(cut, "stop", malformed=True)
    prose = (
        f"[simulated] Malformed answer from the Chordal provider simulator for model {model}: "
        "it ignored the requested JSON schema and answered in prose, as a weak model does."
    )
    return Reply(prose, "stop", malformed=True)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


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
