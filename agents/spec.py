"""What an agent is: a prompt, a kind of work, and optionally the shape of its answer."""

from __future__ import annotations

import json
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from workers.errors import InvalidOutput
from workers.tiers import TaskKind


class AgentSpec(BaseModel):
    """An agent definition, from Python or YAML.

    ``output_model`` (Python) or ``output_schema`` (a JSON Schema, from YAML) makes the agent
    answer in JSON: it is sent to LiteLLM as ``response_format`` and the answer is validated.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    description: str = Field(min_length=1)
    system_prompt: str = Field(min_length=1)
    task_kind: TaskKind = "general"
    default_complexity: float = Field(default=0.5, ge=0, le=1)
    max_output_tokens: int = Field(default=1024, gt=0)
    expected_output_tokens: int = Field(default=400, gt=0)
    output_model: type[BaseModel] | None = Field(default=None, exclude=True)
    output_schema: dict[str, Any] | None = None
    stream: bool = Field(default=False, description="Always stream this agent's answers.")
    # Built once at load: jsonschema.validate() would re-check the schema on every answer.
    _validator: Any = PrivateAttr(default=None)

    @field_validator("output_schema")
    @classmethod
    def _valid_json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # A broken schema must fail when the agent is loaded, not at its first answer.
        if value is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as exc:
                raise ValueError(
                    f"output_schema is not a valid JSON Schema: {exc.message}"
                ) from exc
        return value

    @model_validator(mode="after")
    def _one_schema(self) -> AgentSpec:
        if self.output_model is not None and self.output_schema is not None:
            raise ValueError("give output_model or output_schema, not both")
        return self

    @model_validator(mode="after")
    def _refs_resolve_offline(self) -> AgentSpec:
        # Validation runs with an empty registry, so a $ref to a URL (or to a part of the
        # schema that is not there) would fail at the first answer: refuse it at load instead.
        if self.output_schema is not None:
            missing = unresolvable_refs(self.output_schema)
            if missing:
                refs = ", ".join(repr(ref) for ref in missing)
                msg = (
                    f"agent {self.name}: output_schema $ref {refs} cannot be resolved within "
                    "the schema (workers never fetch a schema from a URL)"
                )
                raise ValueError(msg)
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Build the output validator once, with no registry to fetch from."""
        if self.output_schema is not None:
            self._validator = offline_validator(self.output_schema)

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the agent's answer, if it has one."""
        if self.output_model is not None:
            return self.output_model.model_json_schema()
        return self.output_schema

    def response_format(self) -> dict[str, Any] | None:
        """The OpenAI-style ``response_format`` LiteLLM forwards to the provider."""
        schema = self.json_schema()
        if schema is None:
            return None
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name.replace("-", "_"), "schema": schema},
        }

    def parse_output(self, text: str) -> dict[str, Any] | None:
        """The validated structured answer, or None for a free-text agent.

        Raises InvalidOutput when the answer does not match the schema.
        """
        if self.output_model is not None:
            try:
                return self.output_model.model_validate_json(text).model_dump(mode="json")
            except ValidationError as exc:
                raise InvalidOutput(
                    f"agent {self.name}: answer does not match schema: {exc}"
                ) from exc
        if self._validator is not None:
            import jsonschema
            from referencing.exceptions import Unresolvable

            try:
                data = json.loads(text)
                self._validator.validate(data)
            except (ValueError, jsonschema.ValidationError, Unresolvable) as exc:
                raise InvalidOutput(
                    f"agent {self.name}: answer does not match schema: {exc}"
                ) from exc
            return data if isinstance(data, dict) else {"value": data}
        return None


def offline_validator(schema: dict[str, Any]) -> Any:
    """A validator for ``schema`` whose ``$ref``s resolve only within the schema itself.

    jsonschema's default registry fetches unknown URIs with ``urlopen`` and no timeout; an empty
    ``referencing.Registry`` turns such a reference into an error instead.
    """
    from jsonschema.validators import validator_for
    from referencing import Registry

    return validator_for(schema)(schema, registry=Registry())


def unresolvable_refs(schema: dict[str, Any]) -> list[str]:
    """Every ``$ref``/``$dynamicRef`` in ``schema`` that does not resolve without a network."""
    import referencing.jsonschema
    from jsonschema.validators import validator_for
    from referencing import Registry, Resource
    from referencing.exceptions import Unresolvable

    meta = validator_for(schema).META_SCHEMA
    dialect = meta.get("$id") or meta.get("id") or ""
    specification = referencing.jsonschema.specification_with(
        dialect, default=referencing.jsonschema.DRAFT202012
    )
    root = specification.create_resource(schema)
    missing: list[str] = []
    # Walk the subschemas with the resolver of each one's scope, so relative references and
    # nested $id's resolve exactly as the validator will resolve them.
    pending: list[tuple[Resource[Any], Any]] = [(root, Registry().resolver_with_root(root))]
    while pending:
        resource, resolver = pending.pop()
        contents = resource.contents
        if isinstance(contents, dict):
            for keyword in ("$ref", "$dynamicRef"):
                ref = contents.get(keyword)
                if isinstance(ref, str):
                    try:
                        resolver.lookup(ref)
                    except Unresolvable:
                        missing.append(ref)
        pending.extend((sub, resolver.in_subresource(sub)) for sub in resource.subresources())
    return sorted(set(missing))
