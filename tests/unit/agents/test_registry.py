"""The agent registry: built-ins plus agents defined in YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents.builtin import BUILTIN_AGENTS
from agents.registry import AgentRegistry, read_agent_file
from workers.errors import ConfigurationError, InvalidJob, UnknownAgent


@pytest.fixture
def write_agents(tmp_path: Path):
    """Write a YAML agents file (from agent dicts, or raw text) and return its path."""

    def write(agents: list[dict] | str, *, name: str = "agents.yaml", folder: Path = tmp_path):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(agents if isinstance(agents, str) else yaml.safe_dump({"agents": agents}))
        return path

    return write


def agent(name: str, **fields) -> dict:
    values = {"name": name, "description": f"The {name}.", "system_prompt": f"You are {name}."}
    values.update(fields)
    return values


def test_builtins_are_registered() -> None:
    registry = AgentRegistry.load()

    assert len(registry.names()) >= 5
    assert registry.names() == sorted(spec.name for spec in BUILTIN_AGENTS)
    assert {"researcher", "analyst", "writer", "critic", "summarizer"} <= set(registry.names())


def test_get_returns_the_spec() -> None:
    assert AgentRegistry.load().get("summarizer").task_kind == "extraction"


def test_unknown_agent_lists_the_known_ones() -> None:
    registry = AgentRegistry.load()

    with pytest.raises(UnknownAgent) as caught:
        registry.get("poet")

    error = caught.value
    assert isinstance(error, InvalidJob)
    assert error.field == "agent"
    assert "'poet'" in str(error)
    for name in registry.names():
        assert name in str(error)


def test_yaml_file_adds_agents(write_agents) -> None:
    # Given
    schema = {"type": "object", "properties": {"rhyme": {"type": "string"}}}
    path = write_agents([agent("poet", task_kind="general", output_schema=schema), agent("tagger")])

    # When
    registry = AgentRegistry.load(path)

    # Then
    assert {"poet", "tagger", "writer"} <= set(registry.names())
    assert len(registry.names()) == len(BUILTIN_AGENTS) + 2
    poet = registry.get("poet")
    assert poet.output_schema == schema
    assert poet.parse_output('{"rhyme": "moon"}') == {"rhyme": "moon"}


def test_yaml_agent_overrides_a_builtin(write_agents) -> None:
    path = write_agents([agent("writer", system_prompt="Write only limericks.")])

    registry = AgentRegistry.load(path)

    assert registry.get("writer").system_prompt == "Write only limericks."
    assert len(registry.names()) == len(BUILTIN_AGENTS)


def test_folder_of_yaml_files(write_agents, tmp_path: Path) -> None:
    # Given: two files, the later (sorted) one overriding the earlier, and one ignored file
    folder = tmp_path / "agents.d"
    write_agents([agent("poet", description="First.")], name="a.yaml", folder=folder)
    write_agents(
        [agent("poet", description="Second."), agent("tagger")], name="b.yml", folder=folder
    )
    write_agents("not: [yaml", name="notes.txt", folder=folder)

    # When
    registry = AgentRegistry.load(folder)

    # Then
    assert registry.get("poet").description == "Second."
    assert registry.get("tagger").name == "tagger"


def test_empty_folder_adds_nothing(tmp_path: Path) -> None:
    assert AgentRegistry.load(tmp_path).names() == AgentRegistry.load().names()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ([agent("Bad Name")], "name"),
        ([{"name": "poet", "description": "No prompt."}], "system_prompt"),
        ([agent("poet", temperature=0.3)], "temperature"),
        ([agent("poet", output_model="x", output_schema={})], "output_model"),
        ("agents: [\n", "cannot read"),
        ("", "invalid agents file"),
        ("- just a list\n", "invalid agents file"),
    ],
    ids=["bad-name", "missing-prompt", "unknown-field", "python-only-field", "bad-yaml", "empty",
         "not-a-mapping"],
)  # fmt: skip
def test_invalid_agents_file_is_a_configuration_error(write_agents, content, problem) -> None:
    path = write_agents(content, name="broken.yaml")

    with pytest.raises(ConfigurationError) as caught:
        AgentRegistry.load(path)

    message = str(caught.value)
    assert str(path) in message
    assert problem in message


def test_missing_agents_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"missing\.yaml"):
        read_agent_file(tmp_path / "missing.yaml")


def _team(name: str, *seats: dict) -> dict:
    return {
        "name": name,
        "description": f"The {name} team.",
        "pattern": "ensemble",
        "members": list(seats),
        "aggregator": "writer",
    }


def test_a_team_may_have_a_team_as_a_member(tmp_path: Path) -> None:
    path = tmp_path / "teams.yaml"
    inner = _team("inner", {"agent": "researcher"})
    outer = _team("outer", {"team": "inner"}, {"agent": "critic"})
    path.write_text(yaml.safe_dump({"teams": [inner, outer]}))

    registry = AgentRegistry.load(path)

    assert registry.get_team("outer").team_names() == {"inner"}
    assert registry.get_team("outer").agent_names() == {"critic", "writer"}


def test_nested_unknown_team_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump({"teams": [_team("outer", {"team": "ghost"})]}))

    with pytest.raises(ConfigurationError, match="'outer' names unknown teams: ghost"):
        AgentRegistry.load(path)


def test_teams_nesting_in_a_cycle_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "teams.yaml"
    teams = [
        _team("a", {"team": "b"}),
        _team("b", {"team": "c"}, {"agent": "critic"}),
        _team("c", {"team": "a"}),
    ]
    path.write_text(yaml.safe_dump({"teams": teams}))

    with pytest.raises(ConfigurationError, match="cycle: a -> b -> c -> a"):
        AgentRegistry.load(path)


@pytest.mark.parametrize(
    "ref", ["https://schemas.example.com/rhyme.json", "#/$defs/rhyme"], ids=["remote", "missing"]
)
def test_agent_whose_schema_refers_outside_itself_is_a_configuration_error(
    write_agents, ref: str
) -> None:
    # Given an agent whose output_schema has a $ref that cannot resolve within the schema
    schema = {"type": "object", "properties": {"rhyme": {"$ref": ref}}}
    path = write_agents([agent("tagger"), agent("poet", output_schema=schema)])

    # When the agents load
    with pytest.raises(ConfigurationError) as caught:
        AgentRegistry.load(path)

    # Then the error names the file, the agent and the reference
    message = str(caught.value)
    assert str(path) in message
    assert "agent poet" in message
    assert repr(ref) in message
