"""Validation errors of a catalog file, one readable line each: the entry (numbered from 1, with
its ``model_name``), the field, and what it expects; not pydantic's dump."""

from __future__ import annotations

import json
from enum import Enum
from types import UnionType
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError


def validation_problems(error: ValidationError, model: type[BaseModel], raw: Any) -> list[str]:
    """One line per problem in ``error`` (from validating ``raw`` as ``model``): the catalog entry
    (from 1, with its ``model_name``), the field and what it expects; not pydantic's dump."""
    entries = raw.get("model_list") if isinstance(raw, dict) else None
    problems = []
    for item in error.errors(include_url=False):
        loc, where = list(item["loc"]), "catalog"
        if loc[:1] == ["model_list"] and len(loc) > 1 and isinstance(loc[1], int):
            entry = entries[loc[1]] if isinstance(entries, list) else None
            name = entry.get("model_name") if isinstance(entry, dict) else None
            named = f" (model_name {json.dumps(name)})" if isinstance(name, str) and name else ""
            where, loc = f"catalog entry {loc[1] + 1}{named}", loc[2:]
        field = ".".join(map(str, loc[:-2] if loc[-1:] == ["[key]"] else loc))
        problems.append(": ".join(filter(None, [where, field, _problem(item, model)])))
    return problems


def _problem(item: Any, model: type[BaseModel]) -> str:
    loc, kind, message = list(item["loc"]), item["type"], str(item["msg"])
    if loc[-1:] == ["[key]"]:  # a mapping's key: loc is [..., mapping, key, "[key]"]
        key_type = get_args(_annotation_at(model, loc[:-2]))[:1]
        expected = _expected(key_type[0]) if key_type else message
        return f"key {_shown(item['input'])} is not allowed; expected {expected}"
    expected = _expected(_annotation_at(model, loc))
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "missing":
        return f"missing; expected {expected}" if expected else "missing"
    if expected and kind in {"enum", "literal_error", "model_type", "dict_type", "list_type"}:
        return f"got {_shown(item['input'])}; expected {expected}"
    message = message.removeprefix("Input ")
    return f"got {_shown(item['input'])}; {message[:1].lower()}{message[1:]}"


def _annotation_at(model: type[BaseModel], loc: list[Any]) -> Any:
    # The type declared at ``loc`` (``X | None`` read as ``X``), or None where it is unknown.
    current: Any = model
    for part in [*loc, None]:
        args = [arg for arg in get_args(current) if arg is not type(None)]
        if isinstance(current, UnionType) and len(args) == 1:
            current = args[0]
        if part is None or current is None:
            break
        if isinstance(current, type) and issubclass(current, BaseModel):
            found = current.model_fields.get(str(part))
            current = found.annotation if found is not None else None
        else:
            current = get_args(current)[-1] if get_origin(current) in {list, dict} else None
    return current


def _expected(annotation: Any) -> str | None:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(str(member.value) for member in annotation)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(str, get_args(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        required = [name for name, info in annotation.model_fields.items() if info.is_required()]
        return "a mapping with " + ", ".join(required) if required else "a mapping"
    if get_origin(annotation) is list:
        return f"a list, each {_expected(get_args(annotation)[0]) or 'item'}"
    if get_origin(annotation) is dict:
        keys, values = (_expected(arg) or "" for arg in get_args(annotation))
        named = keys.startswith("one of ") and values
        return f"a mapping of {keys.removeprefix('one of ')} to {values}" if named else "a mapping"
    return {str: "text", int: "a whole number", float: "a number"}.get(annotation)


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str) else str(value)
    return {type(None): "nothing", dict: "a mapping", list: "a list"}.get(type(value), text[:60])
