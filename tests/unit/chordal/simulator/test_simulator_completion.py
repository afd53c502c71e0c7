"""What the simulated model answers and how its tokens are counted."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from chordal.simulator.completion import count_tokens, prompt_tokens, reply, requested_tokens
from chordal.simulator.profiles import Malformation, ModelProfile

VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["accept", "revise"]},
        "notes": {"type": "string", "minLength": 40},
    },
    "required": ["verdict", "notes"],
    "additionalProperties": False,
}
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
    answer = reply({}, "gpt-5", messages=MESSAGES, profile=ModelProfile(output_tokens=60))

    assert answer.content.startswith("[simulated]")
    assert "Chordal provider simulator" in answer.content
    assert "gpt-5" in answer.content
    assert "4 words" in answer.content
    assert "'Summarise the quarterly report'" in answer.content
    assert (count_tokens(answer.content), answer.finish_reason) == (60, "stop")


def test_smaller_max_tokens_truncates() -> None:
    body = {"max_completion_tokens": 7}

    answer = reply(body, "gpt-5", messages=MESSAGES, profile=ModelProfile())

    assert (count_tokens(answer.content), answer.finish_reason) == (7, "length")


def test_json_schema_reply_is_an_instance_and_never_truncated() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    body = {
        "max_tokens": 1,
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
    }

    answer = reply(body, "gpt-5", messages=MESSAGES, profile=ModelProfile())

    assert (json.loads(answer.content), answer.finish_reason) == ({"n": 1}, "stop")
    assert answer.malformed is False


def test_json_object_reply_says_it_is_simulated() -> None:
    body = {"response_format": {"type": "json_object"}}

    answer = reply(body, "gpt-5", messages=MESSAGES, profile=ModelProfile())

    assert json.loads(answer.content)["simulated"] is True


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


@pytest.mark.parametrize(
    ("body", "expected_output"),
    [
        ({}, 48),
        ({"max_tokens": 5}, 5),
        ({"max_completion_tokens": 500}, 48),
        ({"max_tokens": -1}, 48),
    ],
)
def test_requested_tokens_charge_the_prompt_plus_the_expected_output(
    body: dict[str, object], expected_output: int
) -> None:
    charge = requested_tokens(body, messages=MESSAGES, profile=ModelProfile(output_tokens=48))

    assert charge == prompt_tokens(MESSAGES) + expected_output


def _schema_body(schema: dict[str, object]) -> dict[str, object]:
    return {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}


@pytest.mark.parametrize("how", ["truncated", "prose"])
def test_malformed_structured_reply_breaks_the_schema(how: Malformation) -> None:
    answer = reply(
        _schema_body(VERDICT_SCHEMA),
        "gpt-5",
        messages=MESSAGES,
        profile=ModelProfile(),
        malformed=how,
    )

    assert (answer.malformed, answer.finish_reason) == (True, "stop")
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.content)


def test_truncated_reply_is_the_start_of_the_valid_answer() -> None:
    whole = reply(_schema_body(VERDICT_SCHEMA), "gpt-5", messages=MESSAGES, profile=ModelProfile())

    cut = reply(
        _schema_body(VERDICT_SCHEMA),
        "gpt-5",
        messages=MESSAGES,
        profile=ModelProfile(),
        malformed="truncated",
    )

    assert whole.content.startswith(cut.content)
    assert cut.content.startswith('{"verdict": ')


def test_truncating_a_short_scalar_falls_back_to_prose() -> None:
    schema = {"type": "integer", "minimum": 10}

    answer = reply(
        _schema_body(schema),
        "gpt-5",
        messages=MESSAGES,
        profile=ModelProfile(),
        malformed="truncated",
    )

    assert answer.content.startswith("[simulated] Malformed answer")


def test_malformation_only_touches_json_schema_answers() -> None:
    text = reply({}, "gpt-5", messages=MESSAGES, profile=ModelProfile(), malformed="prose")
    loose = reply(
        {"response_format": {"type": "json_object"}},
        "gpt-5",
        messages=MESSAGES,
        profile=ModelProfile(),
        malformed="prose",
    )

    assert text.malformed is loose.malformed is False
    assert json.loads(loose.content)["simulated"] is True


def test_json_overrides_land_on_declared_properties_only() -> None:
    profile = ModelProfile(json_overrides={"verdict": "revise", "score": 3})

    answer = reply(_schema_body(VERDICT_SCHEMA), "gpt-5", messages=MESSAGES, profile=profile)

    data = json.loads(answer.content)
    assert data["verdict"] == "revise"
    assert "score" not in data
    Draft202012Validator(VERDICT_SCHEMA).validate(data)


def test_json_overrides_keep_values_as_given() -> None:
    profile = ModelProfile(json_overrides={"verdict": {"nested": [1, None]}})

    answer = reply(_schema_body(VERDICT_SCHEMA), "gpt-5", messages=MESSAGES, profile=profile)

    assert json.loads(answer.content)["verdict"] == {"nested": [1, None]}
    assert not Draft202012Validator(VERDICT_SCHEMA).is_valid(json.loads(answer.content))


def test_json_overrides_ignore_non_object_schemas() -> None:
    profile = ModelProfile(json_overrides={"verdict": "revise"})

    answer = reply(
        _schema_body({"type": "array", "items": {"type": "string"}}),
        "gpt-5",
        messages=MESSAGES,
        profile=profile,
    )

    assert json.loads(answer.content) == ["simulated"]
