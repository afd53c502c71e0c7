"""Where agents are looked up: the built-ins plus any defined in YAML."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from agents.builtin import BUILTIN_AGENTS
from agents.spec import AgentSpec
from workers.errors import ConfigurationError, UnknownAgent


class AgentFile(BaseModel):
    """A YAML file of agents: ``agents: [{name, description, system_prompt, ...}]``."""

    agents: list[AgentSpec]


class AgentRegistry:
    """Agents by name; later definitions replace earlier ones of the same name."""

    def __init__(self, specs: Iterable[AgentSpec]) -> None:
        self._specs = {spec.name: spec for spec in specs}

    def get(self, name: str) -> AgentSpec:
        """The agent called ``name``; raises UnknownAgent listing the known names."""
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs))
            raise UnknownAgent(f"unknown agent {name!r}; known agents: {known}", "agent") from None

    def names(self) -> list[str]:
        """Every agent name, sorted."""
        return sorted(self._specs)

    @classmethod
    def load(cls, extra: Path | None = None) -> AgentRegistry:
        """The built-in agents plus those in ``extra`` (a YAML file or a folder of them)."""
        specs = list(BUILTIN_AGENTS)
        if extra is not None:
            files = sorted(extra.glob("*.y*ml")) if extra.is_dir() else [extra]
            for path in files:
                specs.extend(read_agent_file(path))
        return cls(specs)


def read_agent_file(path: Path) -> list[AgentSpec]:
    """Agents defined in one YAML file; raises ConfigurationError naming the file and field."""
    try:
        return AgentFile.model_validate(yaml.safe_load(path.read_text())).agents
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read agents file {path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigurationError(f"invalid agents file {path}: {exc}") from exc
