"""Structured answers over HTTP: malformed ones from weak models, and forced fields."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field, ValidationError

from chordal.simulator import SimConfig
from chordal.simulator.admin import SimulatorAdmin
from tests.integration.simulator_support import FAST, admin_request, chats, complete

pytestmark = [
    pytest.mark.integration,
    # LiteLLM lazily imports its GitHub Copilot module on the first call, and pydantic warns
    # about that module's ReadOnly TypedDict; the warning is LiteLLM's, not ours.
    pytest.mark.filterwarnings("ignore:Items? .*ReadOnly:UserWarning"),
]


class Review(BaseModel):
    """A critic's verdict on a draft."""

    verdict: Literal["accept", "revise"]
    reasons: list[str] = Field(min_length=1)
    score: int = Field(ge=1, le=10)


REVIEW_SCHEMA = Review.model_json_schema()
STRUCTURED = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "Review", "schema": REVIEW_SCHEMA, "strict": True},
    }
}


def _schema_valid(content: str) -> bool:
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return False
    return Draft202012Validator(REVIEW_SCHEMA).is_valid(data)


def _contents(replies: list[tuple[int, dict[str, str], Any]]) -> list[str]:
    assert [status for status, _, _ in replies] == [200] * len(replies)
    return [body["choices"][0]["message"]["content"] for _, _, body in replies]


def _weak(**fields: Any) -> SimConfig:
    return SimConfig(seed=3, default=FAST, models={"weak": FAST.model_copy(update=fields)})


@pytest.mark.timeout(60)
def test_malformed_rate_one_breaks_every_structured_answer_with_http_200(
    start_simulator,
) -> None:
    server = start_simulator(_weak(malformed_rate=1.0))

    contents = _contents(chats(server, 20, model="weak", **STRUCTURED))
    text = _contents(chats(server, 1, model="weak"))[0]
    stats = SimulatorAdmin(server.url).stats()["models"]["weak"]

    assert not any(_schema_valid(c) for c in contents)
    assert any(c.startswith('{"verdict": ') for c in contents)
    assert any(c.startswith("[simulated] Malformed answer") for c in contents)
    assert text.startswith("[simulated] Response")
    assert (stats["ok"], stats["malformed"]) == (21, 20)


@pytest.mark.timeout(60)
def test_malformed_rate_zero_never_breaks_a_structured_answer(start_simulator) -> None:
    server = start_simulator(_weak(malformed_rate=0.0))

    contents = _contents(chats(server, 20, model="weak", **STRUCTURED))

    assert all(_schema_valid(c) for c in contents)
    assert SimulatorAdmin(server.url).stats()["models"]["weak"]["malformed"] == 0


@pytest.mark.timeout(60)
def test_which_answers_are_malformed_follows_the_seed(start_simulator) -> None:
    config = _weak(malformed_rate=0.5)

    def valid_flags(seed: int) -> list[bool]:
        server = start_simulator(config.model_copy(update={"seed": seed}))
        return [_schema_valid(c) for c in _contents(chats(server, 30, model="weak", **STRUCTURED))]

    first, again, other = valid_flags(3), valid_flags(3), valid_flags(4)

    assert first == again
    assert set(first) == {True, False}
    assert first != other


@pytest.mark.timeout(60)
def test_litellm_client_fails_to_validate_a_malformed_answer(start_simulator) -> None:
    server = start_simulator(_weak(malformed_rate=1.0))

    response = asyncio.run(complete(server, model="weak", response_format=Review))

    assert response.choices[0].finish_reason == "stop"
    with pytest.raises(ValidationError):
        Review.model_validate_json(response.choices[0].message.content)


@pytest.mark.timeout(60)
def test_json_overrides_decide_what_the_critic_says(start_simulator) -> None:
    server = start_simulator(_weak(json_overrides={"verdict": "revise", "mood": "grumpy"}))

    forced = asyncio.run(complete(server, model="weak", response_format=Review))
    plain = asyncio.run(complete(server, model="other", response_format=Review))

    review = Review.model_validate_json(forced.choices[0].message.content)
    assert review.verdict == "revise"
    assert "mood" not in json.loads(forced.choices[0].message.content)
    assert Review.model_validate_json(plain.choices[0].message.content).verdict == "accept"


@pytest.mark.timeout(60)
def test_json_overrides_values_are_kept_as_given(start_simulator) -> None:
    server = start_simulator(_weak(json_overrides={"score": 99, "reasons": ["too long"]}))

    content = _contents(chats(server, 1, model="weak", **STRUCTURED))[0]

    assert json.loads(content)["reasons"] == ["too long"]
    assert json.loads(content)["score"] == 99
    assert not _schema_valid(content)


@pytest.mark.timeout(60)
def test_malformed_rate_and_overrides_are_patched_at_run_time(start_simulator) -> None:
    server = start_simulator(SimConfig(default=FAST))
    admin = SimulatorAdmin(server.url)

    healthy = _contents(chats(server, 1, model="critic", **STRUCTURED))[0]
    patched = admin.fault("critic", json_overrides={"verdict": "revise"})
    revised = _contents(chats(server, 1, model="critic", **STRUCTURED))[0]
    admin.fault("critic", malformed_rate=1.0)
    broken = _contents(chats(server, 3, model="critic", **STRUCTURED))
    admin.fault("critic", malformed_rate=0.0, json_overrides={})
    restored = _contents(chats(server, 1, model="critic", **STRUCTURED))[0]

    assert json.loads(healthy)["verdict"] == "accept"
    assert patched["profile"]["json_overrides"] == {"verdict": "revise"}
    assert _schema_valid(revised)
    assert json.loads(revised)["verdict"] == "revise"
    assert not any(_schema_valid(c) for c in broken)
    assert admin.stats()["models"]["critic"]["malformed"] == 3
    assert json.loads(restored)["verdict"] == "accept"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"malformed_rate": 1.5}, "malformed_rate"),
        ({"json_overrides": ["verdict"]}, "json_overrides"),
    ],
)
def test_bad_values_for_the_new_fields_are_rejected(start_simulator, changes, field) -> None:
    server = start_simulator(SimConfig(default=FAST))

    status, body = asyncio.run(
        admin_request(server, "PATCH /admin/faults", body={"model": "*", "changes": changes})
    )

    assert status == 400
    assert field in body["error"]["message"]
