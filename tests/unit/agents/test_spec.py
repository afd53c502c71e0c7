"""Agent specs: the response format sent to LiteLLM and validation of the answer."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field, ValidationError

from agents.spec import AgentSpec
from workers.errors import InvalidOutput


class Verdict(BaseModel):
    label: str
    score: float = Field(ge=0, le=1)


VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "number", "maximum": 1}},
    "required": ["label", "score"],
}


@pytest.fixture
def make_spec():
    """An AgentSpec with defaults; override any field by keyword."""

    def make(**fields) -> AgentSpec:
        values = {"name": "judge", "description": "Judges.", "system_prompt": "Judge it."}
        values.update(fields)
        return AgentSpec(**values)

    return make


def test_response_format_from_output_model(make_spec) -> None:
    spec = make_spec(name="my-judge", output_model=Verdict)

    assert spec.response_format() == {
        "type": "json_schema",
        "json_schema": {"name": "my_judge", "schema": Verdict.model_json_schema()},
    }


def test_response_format_from_output_schema(make_spec) -> None:
    spec = make_spec(output_schema=VERDICT_SCHEMA)

    assert spec.response_format() == {
        "type": "json_schema",
        "json_schema": {"name": "judge", "schema": VERDICT_SCHEMA},
    }


def test_free_text_agent_has_no_response_format(make_spec) -> None:
    spec = make_spec()

    assert spec.response_format() is None
    assert spec.json_schema() is None


@pytest.mark.parametrize("schema_from", ["output_model", "output_schema"])
def test_matching_answer_is_returned(make_spec, schema_from: str) -> None:
    spec = make_spec(**{schema_from: Verdict if schema_from == "output_model" else VERDICT_SCHEMA})

    assert spec.parse_output('{"label": "ok", "score": 0.5}') == {"label": "ok", "score": 0.5}


@pytest.mark.parametrize("schema_from", ["output_model", "output_schema"])
@pytest.mark.parametrize(
    "answer",
    ["not json at all", '{"label": "ok"}', '{"label": "ok", "score": 2}', "```json\n{}\n```"],
    ids=["not-json", "missing-field", "out-of-range", "fenced"],
)
def test_mismatching_answer_is_invalid_output(make_spec, schema_from: str, answer: str) -> None:
    spec = make_spec(**{schema_from: Verdict if schema_from == "output_model" else VERDICT_SCHEMA})

    with pytest.raises(InvalidOutput, match="agent judge: answer does not match schema"):
        spec.parse_output(answer)


def test_schema_answer_that_is_not_an_object_is_wrapped(make_spec) -> None:
    spec = make_spec(output_schema={"type": "array", "items": {"type": "integer"}})

    assert spec.parse_output("[1, 2, 3]") == {"value": [1, 2, 3]}


def test_output_model_answer_is_json_ready(make_spec) -> None:
    class Stamp(BaseModel):
        tags: set[str]

    spec = make_spec(output_model=Stamp)

    result = spec.parse_output('{"tags": ["a"]}')
    assert json.loads(json.dumps(result)) == {"tags": ["a"]}


def test_free_text_agent_returns_none(make_spec) -> None:
    assert make_spec().parse_output("Any prose at all, even {not json") is None


def test_invalid_json_schema_is_rejected_when_the_agent_is_defined(make_spec) -> None:
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        make_spec(output_schema={"type": "nonsense"})


def test_both_schemas_is_rejected(make_spec) -> None:
    with pytest.raises(ValidationError, match="not both"):
        make_spec(output_model=Verdict, output_schema=VERDICT_SCHEMA)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "Bad Name"},
        {"name": "1st"},
        {"description": ""},
        {"system_prompt": ""},
        {"task_kind": "poetry"},
        {"default_complexity": 1.5},
        {"max_output_tokens": 0},
        {"temperature": 0.2},
    ],
)
def test_invalid_spec_is_rejected(make_spec, fields: dict) -> None:
    with pytest.raises(ValidationError, match=next(iter(fields))):
        make_spec(**fields)
