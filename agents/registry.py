"""Where agents and teams are looked up: the built-ins plus any defined in YAML."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agents.builtin import BUILTIN_AGENTS
from agents.spec import AgentSpec
from agents.team import BUILTIN_TEAMS, TeamSpec
from workers.errors import ConfigurationError, UnknownAgent

T = TypeVar("T")


class AgentFile(BaseModel):
    """A YAML file of ``agents: [{name, description, system_prompt, ...}]`` and ``teams: [...]``."""

    agents: list[AgentSpec] = []
    teams: list[TeamSpec] = []


class AgentRegistry:
    """Agents and teams by name; later definitions replace earlier ones of the same name."""

    def __init__(self, specs: Iterable[AgentSpec], teams: Iterable[TeamSpec] = ()) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._teams = {team.name: team for team in teams}
        for team in self._teams.values():
            unknown = team.agent_names() - set(self._specs)
            if unknown:
                msg = f"team {team.name!r} names unknown agents: {', '.join(sorted(unknown))}"
                raise ConfigurationError(msg)
            unknown = team.team_names() - set(self._teams)
            if unknown:
                msg = f"team {team.name!r} names unknown teams: {', '.join(sorted(unknown))}"
                raise ConfigurationError(msg)
        for team in self._teams.values():
            self._check_no_cycle(team.name, path=())

    def _check_no_cycle(self, name: str, *, path: tuple[str, ...]) -> None:
        # A team that contains itself, however deep, would fan out forever.
        if name in path:
            cycle = " -> ".join((*path, name))
            raise ConfigurationError(f"teams nest in a cycle: {cycle}")
        for inner in sorted(self._teams[name].team_names()):
            self._check_no_cycle(inner, path=(*path, name))

    def get(self, name: str) -> AgentSpec:
        """The agent called ``name``; raises UnknownAgent listing the known names."""
        return _lookup(self._specs, name, kind="agent")

    def names(self) -> list[str]:
        """Every agent name, sorted."""
        return sorted(self._specs)

    def get_team(self, name: str) -> TeamSpec:
        """The team called ``name``; raises UnknownAgent (field ``team``) listing known teams."""
        return _lookup(self._teams, name, kind="team")

    def team_names(self) -> list[str]:
        """Every team name, sorted."""
        return sorted(self._teams)

    @classmethod
    def load(cls, extra: Path | None = None) -> AgentRegistry:
        """The built-in agents plus those in ``extra`` (a YAML file or a folder of them)."""
        specs, teams = list(BUILTIN_AGENTS), list(BUILTIN_TEAMS)
        if extra is not None:
            files = sorted(extra.glob("*.y*ml")) if extra.is_dir() else [extra]
            for path in files:
                defined = read_agent_file(path)
                specs.extend(defined.agents)
                teams.extend(defined.teams)
        return cls(specs, teams)


def _lookup(known: Mapping[str, T], name: str, *, kind: str) -> T:
    try:
        return known[name]
    except KeyError:
        names = ", ".join(sorted(known))
        raise UnknownAgent(f"unknown {kind} {name!r}; known {kind}s: {names}", kind) from None


def read_agent_file(path: Path) -> AgentFile:
    """Agents and teams in one YAML file; raises ConfigurationError naming the file and field."""
    try:
        return AgentFile.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read agents file {path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigurationError(f"invalid agents file {path}: {exc}") from exc
