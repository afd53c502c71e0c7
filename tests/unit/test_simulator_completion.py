"""What the simulated model answers and how its tokens are counted."""

from __future__ import annotations

import json

import pytest

from workers.simulator.completion import count_tokens, prompt_tokens, reply
from workers.simulator.profiles import ModelProfile

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Summarise the quarterly report"}]},
]


def test_token_heuristic() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    messages = [
        {"role": "user", "content": ["abcd", image]},
        {"role": "assistant", "content": None},
    ]

    assert count_tokens("") == 0
    assert count_tokens("abcde") == 2
    assert prompt_tokens(messages) == (4 + 1 + 85) + 4


def test_text_reply_is_honest_and_has_the_profile_length() -> None:
    content, finish = reply({}, "gpt-5", messages=MESSAGES, profile=ModelProfile(output_tokens=60))

    assert content.startswith("[simulated]")
    assert "Chordal provider simulator" in content
    assert "gpt-5" in content
    assert "4 words" in content
    assert "'Summarise the quarterly report'" in content
    assert (count_tokens(content), finish) == (60, "stop")


def test_smaller_max_tokens_truncates() -> None:
    body = {"max_completion_tokens": 7}

    content, finish = reply(body, "gpt-5", messages=MESSAGES, profile=ModelProfile())

    assert (count_tokens(content), finish) == (7, "length")


def test_json_schema_reply_is_an_instance_and_never_truncated() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    body = {
        "max_tokens": 1,
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
    }

    content, finish = reply(body, "gpt-5", messages=MESSAGES, profile=ModelProfile())

    assert (json.loads(content), finish) == ({"n": 1}, "stop")


def test_json_object_reply_says_it_is_simulated() -> None:
    body = {"response_format": {"type": "json_object"}}

    content, _ = reply(body, "gpt-5", messages=MESSAGES, profile=ModelProfile())

    assert json.loads(content)["simulated"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "json_schema.schema"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
    ],
)
def test_bad_request_fields_raise_value_error(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        reply(body, "gpt-5", messages=MESSAGES, profile=ModelProfile())
