"""Settings: CHORDAL_* environment, the visibility rule, the result backend and the profile."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from workers.settings import DEFAULT_TIER_EXPECTED_LATENCY_S, PROVIDER_KEY_VARS, Settings
from workers.tiers import Tier


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHORDAL_* variable or provider key leaks in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("CHORDAL_"):
            monkeypatch.delenv(name)
    for name in PROVIDER_KEY_VARS:
        monkeypatch.delenv(name, raising=False)


def test_fields_are_read_from_chordal_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given
    monkeypatch.setenv("CHORDAL_BROKER_URL", "redis://broker:6379/1")
    monkeypatch.setenv("CHORDAL_TASK_TIME_LIMIT_S", "30")
    monkeypatch.setenv("CHORDAL_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("CHORDAL_PROFILE", "cloud")

    # When
    settings = Settings()

    # Then
    assert settings.broker_url == "redis://broker:6379/1"
    assert settings.task_time_limit_s == 30.0
    assert settings.max_attempts == 7
    assert settings.profile == "cloud"


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("MAX_ATTEMPTS", "9")

    settings = Settings()

    assert settings.broker_url is None
    assert settings.max_attempts == 3


def test_invalid_environment_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORDAL_MAX_ATTEMPTS", "0")

    with pytest.raises(ValidationError, match="max_attempts"):
        Settings()


@pytest.mark.parametrize("visibility", [600.0, 599.0, 10.0])
def test_visibility_timeout_must_exceed_task_time_limit(visibility: float) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(task_time_limit_s=600.0, visibility_timeout_s=visibility)

    message = str(caught.value)
    assert "visibility_timeout_s" in message
    assert "task_time_limit_s" in message


def test_visibility_rule_applies_to_values_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHORDAL_TASK_TIME_LIMIT_S", "4000")

    with pytest.raises(ValidationError, match="must exceed"):
        Settings()


def test_visibility_timeout_above_time_limit_is_accepted() -> None:
    settings = Settings(task_time_limit_s=600.0, visibility_timeout_s=600.5)

    assert settings.visibility_timeout_s > settings.task_time_limit_s


@pytest.mark.parametrize("broker", ["redis://localhost:6379/0", "rediss://cache.example:6380/2"])
def test_backend_defaults_to_a_redis_broker(broker: str) -> None:
    assert Settings(broker_url=broker).backend_url == broker


def test_configured_result_backend_wins_over_the_broker() -> None:
    settings = Settings(broker_url="redis://broker/0", result_backend="redis://results/3")

    assert settings.backend_url == "redis://results/3"


def test_amqp_broker_without_result_backend_has_no_backend() -> None:
    assert Settings(broker_url="amqp://guest@rabbit:5672//").backend_url is None


def test_amqp_broker_uses_the_configured_result_backend() -> None:
    settings = Settings(broker_url="amqp://guest@rabbit//", result_backend="redis://results/0")

    assert settings.backend_url == "redis://results/0"


def test_no_broker_means_no_backend() -> None:
    assert Settings().backend_url is None


def test_auto_profile_is_offline_without_provider_keys() -> None:
    assert Settings(profile="auto").resolved_profile == "offline"


@pytest.mark.parametrize("key", PROVIDER_KEY_VARS)
def test_auto_profile_is_cloud_with_any_provider_key(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv(key, "sk-test")

    assert Settings(profile="auto").resolved_profile == "cloud"


def test_empty_provider_key_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")

    assert Settings().resolved_profile == "offline"


def test_explicit_profile_wins_over_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")

    assert Settings(profile="offline").resolved_profile == "offline"
    assert Settings(profile="cloud").resolved_profile == "cloud"


def test_local_tier_is_off_by_default() -> None:
    settings = Settings()

    assert settings.local_tier is False
    assert settings.local_concurrency == 2


def test_local_model_flag_turns_the_local_tier_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORDAL_LOCAL_MODEL", "true")

    assert Settings().local_tier is True


def test_a_local_model_url_turns_the_local_tier_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORDAL_LOCAL_MODEL_URL", "http://127.0.0.1:11434/v1")

    settings = Settings()

    assert settings.local_tier is True
    assert settings.local_model is False


def test_tier_price_bands_are_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORDAL_TIER_PRICE_BANDS_USD", '{"fast": 0.5, "balanced": 3}')

    assert Settings().tier_price_bands_usd == {Tier.FAST: 0.5, Tier.BALANCED: 3.0}


@pytest.mark.parametrize(
    ("bands", "problem"),
    [({"local": 1.0}, "never inferred"), ({}, "never inferred"),
     ({"fast": 1.0, "premium": 9.0}, "premium has no band"),
     ({"fast": 5.0, "balanced": 1.0}, "rise from fast"), ({"fast": -1.0}, "non-negative")],
)  # fmt: skip
def test_tier_price_bands_never_infer_local_and_rise(bands: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(tier_price_bands_usd=bands)


def test_tier_latencies_given_replace_only_their_tiers() -> None:
    latency = Settings(tier_expected_latency_s={"premium": 20.0}).tier_expected_latency_s

    assert latency[Tier.PREMIUM] == 20.0
    assert latency[Tier.FAST] == DEFAULT_TIER_EXPECTED_LATENCY_S[Tier.FAST]
    assert set(latency) == set(Tier)
