"""Build a valid placeholder instance of a JSON Schema (as pydantic emits it)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

PLACEHOLDER = "simulated"

# Past this depth recursive schemas stop growing: optional members are dropped
# and arrays shrink to their minimum, so self-referencing models terminate.
_SHRINK_DEPTH = 12
_MAX_DEPTH = 64

_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "duration": "PT1S",
    "email": "simulated@example.com",
    "idn-email": "simulated@example.com",
    "uri": "https://example.com/simulated",
    "url": "https://example.com/simulated",
    "iri": "https://example.com/simulated",
    "uri-reference": "https://example.com/simulated",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
    "idn-hostname": "example.com",
}

_TYPE_ORDER = ("object", "array", "string", "integer", "number", "boolean", "null")


class SchemaError(ValueError):
    """Raised when no instance can be built for a schema."""


def instance_for(schema: Mapping[str, Any] | bool) -> Any:
    """Return a value that validates against ``schema`` (placeholders, not real data)."""
    root = schema if isinstance(schema, Mapping) else {}
    return _Builder(root).build(schema, 0)


class _Builder:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root

    def build(self, schema: Mapping[str, Any] | bool, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise SchemaError("schema recursion too deep to instantiate")
        if isinstance(schema, bool):
            if not schema:
                raise SchemaError("the schema `false` has no instances")
            return PLACEHOLDER
        flat = self._flatten(schema)
        if "const" in flat:
            return flat["const"]
        if "enum" in flat:
            if not flat["enum"]:
                raise SchemaError("empty enum has no instances")
            return flat["enum"][0]
        branches = flat.get("anyOf", flat.get("oneOf"))
        if branches is not None:
            return self._first_branch(flat, branches, depth)
        return self._typed(flat, self._kind(flat, depth), depth)

    def _typed(self, schema: dict[str, Any], kind: str, depth: int) -> Any:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer")
        scalars: dict[str, Any] = {"boolean": True, "null": None}
        return scalars[kind] if kind in scalars else _string(schema)

    def _flatten(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """Inline ``$ref`` and ``allOf`` so the remaining keywords sit in one dict."""
        merged = {k: v for k, v in schema.items() if k not in ("$ref", "allOf")}
        parts: list[Mapping[str, Any]] = []
        if "$ref" in schema:
            parts.append(self._resolve(schema["$ref"]))
        parts.extend(s for s in schema.get("allOf", []) if isinstance(s, Mapping))
        for part in parts:
            flat = self._flatten(part)
            props = {**flat.get("properties", {}), **merged.get("properties", {})}
            required = [*flat.get("required", []), *merged.get("required", [])]
            merged = {**flat, **merged}
            if props:
                merged["properties"] = props
            if required:
                merged["required"] = list(dict.fromkeys(required))
        return merged

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            raise SchemaError(f"only local $ref is supported, got {ref!r}")
        node: Any = self._root
        for token in filter(None, ref[1:].split("/")):
            key = token.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or key not in node:
                raise SchemaError(f"unresolvable $ref {ref!r}")
            node = node[key]
        if not isinstance(node, Mapping):
            raise SchemaError(f"$ref {ref!r} does not point to a schema")
        return node

    def _first_branch(self, schema: dict[str, Any], branches: list[Any], depth: int) -> Any:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        ordered = list(branches)
        if depth >= _SHRINK_DEPTH:
            # Deep inside recursion a null branch ends the chain.
            ordered.sort(key=lambda b: not (isinstance(b, Mapping) and b.get("type") == "null"))
        errors: list[str] = []
        for branch in ordered:
            combined = {**rest, "allOf": [branch]} if rest else branch
            try:
                return self.build(combined, depth + 1)
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError("no workable branch: " + "; ".join(errors))

    def _kind(self, schema: Mapping[str, Any], depth: int) -> str:
        declared = schema.get("type")
        if isinstance(declared, str):
            return declared
        if isinstance(declared, list) and declared:
            kinds = [k for k in _TYPE_ORDER if k in declared]
            if depth >= _SHRINK_DEPTH and "null" in kinds:
                return "null"
            non_null = [k for k in kinds if k != "null"]
            return (non_null or kinds or ["string"])[0]
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        shrink = depth >= _SHRINK_DEPTH
        result = {
            name: self.build(sub, depth + 1)
            for name, sub in props.items()
            if name in required or not shrink
        }
        extra = schema.get("additionalProperties", True)
        missing = [name for name in required if name not in result]
        for name in missing:
            if extra is False:
                raise SchemaError(f"required property {name!r} is not allowed")
            result[name] = self.build(extra, depth + 1)
        index = 0
        while len(result) < schema.get("minProperties", 0):
            if extra is False:
                raise SchemaError("minProperties exceeds the declared properties")
            index += 1
            result[f"{PLACEHOLDER}_{index}"] = self.build(extra, depth + 1)
        return result

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = [self.build(s, depth + 1) for s in schema.get("prefixItems", [])]
        minimum = schema.get("minItems", 0)
        wanted = minimum if depth >= _SHRINK_DEPTH or "prefixItems" in schema else max(minimum, 1)
        wanted = min(wanted, schema.get("maxItems", wanted))
        items = schema.get("items", True)
        if len(prefix) >= wanted or items is False:
            return prefix
        return prefix + [self.build(items, depth + 1) for _ in range(wanted - len(prefix))]


def _string(schema: Mapping[str, Any]) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    min_len = int(schema.get("minLength", 0))
    max_len = schema.get("maxLength")
    text = PLACEHOLDER
    while len(text) < min_len:
        text = f"{text} {PLACEHOLDER}"
    text = text[: max(min_len, len(PLACEHOLDER))]
    if max_len is not None:
        text = text[: int(max_len)]
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        # Patterns are only satisfied when a simple candidate happens to match.
        for candidate in (text, "a", "A", "0", "a" * max(min_len, 1), ""):
            if re.search(pattern, candidate) and len(candidate) >= min_len:
                return candidate
    return text


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    low, high = schema.get("minimum"), schema.get("maximum")
    x_low, x_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = schema.get("multipleOf")
    bounds = [b for b in (low, high, x_low, x_high) if isinstance(b, int | float)]
    seeds: list[float] = [1.0, 0.0, *bounds]
    seeds += [b + d for b in bounds for d in (1.0, -1.0, 0.5, -0.5)]
    if len(bounds) >= 2:
        seeds.append(sum(bounds) / len(bounds))
    for value in _candidates(seeds, integer=integer, step=step):
        if _within(value, low, high, x_low, x_high):
            return value
    raise SchemaError("no number satisfies the numeric bounds")


def _candidates(seeds: Iterable[float], *, integer: bool, step: Any) -> Iterable[int | float]:
    for seed in seeds:
        if isinstance(step, int | float) and step > 0:
            yield from (
                _cast(k * step, integer) for k in (math.ceil(seed / step), math.floor(seed / step))
            )
        elif integer:
            yield from (math.ceil(seed), math.floor(seed))
        else:
            yield float(seed)


def _cast(value: float, integer: bool) -> int | float:
    return round(value) if integer else float(value)


def _within(value: float, low: Any, high: Any, x_low: Any, x_high: Any) -> bool:
    return (
        (low is None or value >= low)
        and (high is None or value <= high)
        and (x_low is None or value > x_low)
        and (x_high is None or value < x_high)
    )
