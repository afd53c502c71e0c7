"""instance_for builds values that validate against pydantic-emitted JSON Schemas."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field

from chordal.simulator.schema import SchemaError, instance_for


class Colour(StrEnum):
    """A closed set of strings."""

    RED = "red"
    BLUE = "blue"


class Item(BaseModel):
    """A nested object."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=12, max_length=20)
    quantity: int = Field(ge=5, le=9)
    price: float = Field(gt=0, lt=1)
    colour: Colour


class Cat(BaseModel):
    """One branch of a discriminated union."""

    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    """The other branch of a discriminated union."""

    kind: Literal["dog"]
    good: bool


class Order(BaseModel):
    """A model touching most of the schema features pydantic emits."""

    id: UUID
    placed: datetime
    ship_by: date
    items: list[Item] = Field(min_length=2, max_length=3)
    note: str | None = None
    labels: dict[str, int]
    pair: tuple[int, str]
    tags: set[str]
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    mode: Literal["fast", "slow"]
    step: int = Field(multiple_of=5, gt=7)
    ratio: float = Field(ge=-2.5, le=-1.5)
    payload: Any


class Tree(BaseModel):
    """A recursive model."""

    value: int
    children: list[Tree]
    parent: Tree | None


def _check(schema: dict[str, Any]) -> Any:
    instance = instance_for(schema)
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(instance)
    return instance


@pytest.mark.parametrize("model", [Item, Order, Tree, Cat])
def test_pydantic_models_validate_their_own_instances(model: type[BaseModel]) -> None:
    instance = _check(model.model_json_schema())

    model.model_validate(instance)


def test_object_fills_every_declared_property_with_placeholders() -> None:
    instance = _check(Item.model_json_schema())

    assert set(instance) == {"name", "quantity", "price", "colour"}
    assert instance["name"].startswith("simulated")
    assert instance["colour"] == "red"


def test_array_defaults_to_one_item_and_honours_min_items() -> None:
    assert _check({"type": "array", "items": {"type": "integer"}}) == [1]
    assert len(_check({"type": "array", "items": {"type": "string"}, "minItems": 3})) == 3
    assert _check({"type": "array", "maxItems": 0}) == []


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "exclusiveMinimum": 10},
        {"type": "integer", "maximum": -4},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
        {"type": "integer", "minimum": 3, "multipleOf": 4},
        {"type": "string", "maxLength": 3},
        {"type": "string", "minLength": 25},
        {"type": "string", "pattern": "^[0-9]+$"},
        {"type": "string", "format": "email"},
        {"type": ["null", "integer"]},
        {"const": {"fixed": [1, 2]}},
        {"enum": [7, 8]},
        {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2},
        {
            "allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}],
            "required": ["a"],
        },
        {"oneOf": [{"type": "string", "enum": []}, {"type": "boolean"}]},
        {},
    ],
)
def test_raw_keywords_are_respected(schema: dict[str, Any]) -> None:
    _check(schema)


def test_additional_properties_false_adds_nothing_undeclared() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }

    assert _check(schema) == {"a": "simulated"}


def test_recursion_terminates() -> None:
    instance = _check(Tree.model_json_schema())

    depth, node = 0, instance
    while node["children"]:
        node, depth = node["children"][0], depth + 1
    assert 0 < depth < 20


@pytest.mark.parametrize(
    "schema",
    [
        {"not-a-schema": 1, "type": "object", "properties": {"a": False}},
        {"$ref": "#/$defs/Missing"},
        {"$ref": "https://example.com/remote.json"},
        {"type": "integer", "minimum": 5, "maximum": 4},
        {"enum": []},
    ],
)
def test_impossible_schemas_raise_schema_error(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        instance_for(schema)
