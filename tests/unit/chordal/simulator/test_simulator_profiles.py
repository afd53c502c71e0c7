"""Model profiles, simulator configuration and the deterministic fault draw."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pydantic import ValidationError

from chordal.simulator.profiles import ModelProfile, SimConfig, decide


def test_profile_defaults_are_a_healthy_model() -> None:
    profile = ModelProfile()

    assert (profile.latency_median_s, profile.latency_sigma) == (0.2, 0.25)
    assert profile.error_rate == profile.rate_limit_rate == profile.timeout_rate == 0
    assert (profile.retry_after_s, profile.hang_s, profile.outage) == (1, 30.0, False)
    assert (profile.output_tokens, profile.context_window) == (48, None)
    assert (profile.rpm, profile.tpm, profile.rate_window_s) == (None, None, 60.0)
    assert (profile.malformed_rate, profile.json_overrides) == (0.0, {})


@pytest.mark.parametrize(
    "fields",
    [
        {"error_rate": 1.5},
        {"rate_limit_rate": -0.1},
        {"timeout_rate": 2},
        {"latency_median_s": -1},
        {"output_tokens": 0},
        {"rpm": 0},
        {"tpm": -5},
        {"rate_window_s": 0},
        {"malformed_rate": 1.01},
        {"json_overrides": {"verdict": object()}},
        {"json_overrides": ["verdict"]},
        {"colour": "red"},
    ],
)
def test_profile_rejects_bad_fields(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ModelProfile.model_validate(fields)


def test_unknown_models_use_the_default_profile() -> None:
    slow = ModelProfile(latency_median_s=3)
    config = SimConfig(default=ModelProfile(error_rate=0.5), models={"gpt-5": slow})

    assert config.profile_for("gpt-5") is slow
    assert config.profile_for("never-configured").error_rate == 0.5


def test_patched_model_starts_from_the_default_and_leaves_the_original_alone() -> None:
    config = SimConfig(default=ModelProfile(latency_median_s=1.0))

    patched = config.patched("gemini/gemini-2.5-flash", {"outage": True})

    assert patched.models["gemini/gemini-2.5-flash"].outage is True
    assert patched.models["gemini/gemini-2.5-flash"].latency_median_s == 1.0
    assert patched.default.outage is False
    assert config.models == {}


def test_patched_star_changes_the_default_and_every_listed_model() -> None:
    config = SimConfig(models={"a": ModelProfile(), "b": ModelProfile(error_rate=0.1)})

    patched = config.patched("*", {"rate_limit_rate": 0.25})

    rates = [patched.default, patched.models["a"], patched.models["b"]]
    assert [p.rate_limit_rate for p in rates] == [0.25, 0.25, 0.25]
    assert patched.models["b"].error_rate == 0.1


def test_patched_validates_changes() -> None:
    with pytest.raises(ValidationError, match="error_rate"):
        SimConfig().patched("*", {"error_rate": 7})
    with pytest.raises(ValidationError, match="bogus"):
        SimConfig().patched("gpt-5", {"bogus": 1})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_from_file_reads_yaml_and_json(tmp_path, suffix: str) -> None:
    data = {"seed": 9, "latency_scale": 0.1, "models": {"gpt-5": {"outage": True}}}
    path = tmp_path / f"sim{suffix}"
    path.write_text(json.dumps(data), encoding="utf-8")

    config = SimConfig.from_file(path)

    assert (config.seed, config.latency_scale) == (9, 0.1)
    assert config.profile_for("gpt-5").outage is True


def test_decide_is_deterministic_per_seed_model_and_sequence() -> None:
    config = SimConfig(seed=4, default=ModelProfile(error_rate=0.5, rate_limit_rate=0.3))

    first = [decide(config, "gpt-5", seq=n) for n in range(50)]
    again = [decide(config, "gpt-5", seq=n) for n in range(50)]
    other_model = [decide(config, "gpt-4.1-mini", seq=n) for n in range(50)]

    assert first == again
    assert first != other_model
    assert len({d.latency_s for d in first}) == 50


def test_decide_follows_the_rates() -> None:
    config = SimConfig(default=ModelProfile(error_rate=0.2, rate_limit_rate=0.1, timeout_rate=0.1))

    counts = Counter(decide(config, "m", seq=n).outcome for n in range(4000))

    assert counts["rate_limited"] / 4000 == pytest.approx(0.1, abs=0.03)
    assert counts["error"] / 4000 == pytest.approx(0.9 * 0.2, abs=0.03)
    assert counts["timeout"] / 4000 == pytest.approx(0.9 * 0.8 * 0.1, abs=0.03)


def test_outage_wins_over_every_other_fault() -> None:
    profile = ModelProfile(outage=True, rate_limit_rate=1, error_rate=1, timeout_rate=1)

    assert decide(SimConfig(default=profile), "m", seq=0).outcome == "outage"


def test_fixed_latency_is_scaled() -> None:
    config = SimConfig(
        default=ModelProfile(latency_median_s=2.0, latency_sigma=0), latency_scale=0.25
    )

    assert decide(config, "m", seq=3).latency_s == 0.5


def test_lognormal_latency_centres_on_the_median() -> None:
    config = SimConfig(default=ModelProfile(latency_median_s=0.4, latency_sigma=0.5))

    samples = sorted(decide(config, "m", seq=n).latency_s for n in range(2001))

    assert samples[1000] == pytest.approx(0.4, rel=0.1)


def test_decide_malforms_at_the_profile_rate_without_shifting_other_draws() -> None:
    plain = SimConfig(seed=5, default=ModelProfile(error_rate=0.3))
    weak = plain.patched("*", {"malformed_rate": 0.4})

    before = [decide(plain, "m", seq=n) for n in range(4000)]
    after = [decide(weak, "m", seq=n) for n in range(4000)]

    kinds = Counter(d.malformed for d in after)
    assert {d.malformed for d in before} == {None}
    assert [(d.outcome, d.latency_s) for d in before] == [(d.outcome, d.latency_s) for d in after]
    assert (kinds["truncated"] + kinds["prose"]) / 4000 == pytest.approx(0.4, abs=0.03)
    assert kinds["truncated"] / 4000 == pytest.approx(0.2, abs=0.03)


@pytest.mark.parametrize(("rate", "expected"), [(0.0, {None}), (1.0, {"truncated", "prose"})])
def test_malformed_rate_extremes(rate: float, expected: set[str | None]) -> None:
    config = SimConfig(seed=2, default=ModelProfile(malformed_rate=rate))

    assert {decide(config, "m", seq=n).malformed for n in range(500)} == expected


def test_json_overrides_patch_replaces_the_mapping() -> None:
    config = SimConfig().patched("critic", {"json_overrides": {"verdict": "revise", "n": 1}})

    patched = config.patched("critic", {"json_overrides": {"verdict": "accept"}})

    assert patched.profile_for("critic").json_overrides == {"verdict": "accept"}
    assert patched.default.json_overrides == {}
