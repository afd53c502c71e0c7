"""Agent specs: the response format sent to LiteLLM and validation of the answer."""

from __future__ import annotations

import json
import urllib.request

import pytest
from jsonschema.validators import validator_for
from pydantic import BaseModel, Field, ValidationError
from referencing.exceptions import Unresolvable

from agents.spec import AgentSpec, offline_validator, unresolvable_refs
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


REMOTE = "https://schemas.example.com/verdict.json"


@pytest.mark.parametrize(
    ("ref", "where"),
    [
        (REMOTE, "remote"),
        ("#/$defs/nowhere", "missing-pointer"),
        ("#no-such-anchor", "missing-anchor"),
        ("other.json", "relative-file"),
    ],
)
def test_a_ref_that_cannot_resolve_offline_is_refused_at_load(
    make_spec, ref: str, where: str
) -> None:
    schema = {"type": "object", "properties": {"label": {"$ref": ref}}}

    with pytest.raises(ValidationError) as caught:
        make_spec(name="judge", output_schema=schema)

    message = str(caught.value)
    assert "agent judge" in message
    assert repr(ref) in message


def test_refs_within_the_schema_resolve_and_validate(make_spec) -> None:
    # Given references by pointer, by anchor and by a nested $id, all inside the schema
    schema = {
        "$id": "https://chordal.invalid/verdict",
        "type": "object",
        "$defs": {
            "label": {"$anchor": "label", "type": "string", "enum": ["ok", "bad"]},
            "score": {"$id": "score", "type": "number", "maximum": 1},
        },
        "properties": {
            "label": {"$ref": "#label"},
            "score": {"$ref": "score"},
            "again": {"$ref": "#/$defs/label"},
        },
        "required": ["label", "score"],
    }
    spec = make_spec(output_schema=schema)

    assert spec.parse_output('{"label": "ok", "score": 0.5}') == {"label": "ok", "score": 0.5}
    with pytest.raises(InvalidOutput):
        spec.parse_output('{"label": "meh", "score": 0.5}')
    with pytest.raises(InvalidOutput):
        spec.parse_output('{"label": "ok", "score": 5}')


def test_validation_never_fetches_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a schema with a remote reference, and urlopen watched
    fetched: list[object] = []

    def urlopen(request: object, *args: object, **kwargs: object) -> object:
        fetched.append(request)
        raise OSError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    schema = {"type": "object", "properties": {"label": {"$ref": REMOTE}}}

    # When an answer is validated the way agents validate, it fails without a fetch
    with pytest.raises(Unresolvable):
        offline_validator(schema).validate({"label": "ok"})
    assert fetched == []
    assert unresolvable_refs(schema) == [REMOTE]

    # (jsonschema's default registry would have fetched it)
    with pytest.raises(Unresolvable):
        validator_for(schema)(schema).validate({"label": "ok"})
    assert len(fetched) == 1


def test_the_validator_is_built_once_per_spec(make_spec) -> None:
    spec = make_spec(output_schema=VERDICT_SCHEMA)
    validator = spec._validator

    spec.parse_output('{"label": "ok", "score": 0.5}')

    assert validator is not None
    assert spec._validator is validator
    assert validator.schema == VERDICT_SCHEMA
