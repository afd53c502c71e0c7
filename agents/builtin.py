"""The agents every Chordal installation has."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agents.spec import AgentSpec


class Critique(BaseModel):
    """A critic's verdict on a draft."""

    verdict: Literal["accept", "revise"]
    score: float = Field(ge=0, le=1)
    issues: list[str]


class PlanStep(BaseModel):
    """One subtask of a plan and the agent that should do it."""

    agent: str
    instruction: str


class Plan(BaseModel):
    """A planner's decomposition of a goal."""

    goal: str
    steps: list[PlanStep] = Field(min_length=1)


class Classification(BaseModel):
    """A classifier's label with its confidence."""

    label: str
    confidence: float = Field(ge=0, le=1)


BUILTIN_AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec(
        name="researcher",
        description="Gathers the relevant facts on a question and states what is uncertain.",
        system_prompt=(
            "You are a careful researcher. List the facts that bear on the question, say where "
            "each comes from, and mark anything uncertain."
        ),
        default_complexity=0.6,
    ),
    AgentSpec(
        name="analyst",
        description="Reasons over facts to a conclusion, showing the steps.",
        system_prompt="You are an analyst. Reason step by step to a conclusion and state it.",
        default_complexity=0.7,
    ),
    AgentSpec(
        name="writer",
        description="Writes clear prose for a stated audience.",
        system_prompt="You are a writer. Write clearly and concisely for the stated audience.",
        default_complexity=0.4,
    ),
    AgentSpec(
        name="critic",
        description="Reviews a draft and returns a verdict, a score and concrete issues.",
        system_prompt="You are a demanding reviewer. Judge the draft and list concrete issues.",
        default_complexity=0.6,
        output_model=Critique,
    ),
    AgentSpec(
        name="summarizer",
        description="Summarises a text faithfully in a few sentences.",
        system_prompt="Summarise the text faithfully in at most five sentences.",
        task_kind="extraction",
        default_complexity=0.2,
        expected_output_tokens=150,
    ),
    AgentSpec(
        name="planner",
        description="Breaks a goal into subtasks, naming the agent for each.",
        system_prompt=(
            "You are a planner. Break the goal into a short list of subtasks and name the best "
            "agent for each (researcher, analyst, writer, critic, summarizer, classifier, coder)."
        ),
        default_complexity=0.7,
        output_model=Plan,
    ),
    AgentSpec(
        name="classifier",
        description="Assigns a single label to the input with a confidence.",
        system_prompt="Classify the input. Answer with one label and your confidence.",
        task_kind="extraction",
        default_complexity=0.1,
        expected_output_tokens=30,
        max_output_tokens=256,
        output_model=Classification,
    ),
    AgentSpec(
        name="coder",
        description="Writes or fixes code, with a short explanation.",
        system_prompt="You are a senior software engineer. Write correct, idiomatic code.",
        task_kind="coding",
        default_complexity=0.7,
        expected_output_tokens=800,
        max_output_tokens=4096,
    ),
)
