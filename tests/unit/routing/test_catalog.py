"""The model catalog: the shipped file, LiteLLM prices, profiles and validation."""

from __future__ import annotations

import json
import re
import statistics
import textwrap
from pathlib import Path

import pytest
import yaml

from routing.catalog import (
    LOCAL_API_KEY,
    SIMULATOR_API_KEY,
    CatalogEntry,
    CatalogFile,
    catalog_for,
    default_local_catalog_path,
    read_catalog,
    read_catalog_for,
    resolve,
)
from routing.llm import model_cost_map
from tests.support import LITELLM_CONFIG_INVALID
from workers.errors import ConfigurationError
from workers.settings import Settings
from workers.tiers import QUALITY_TIERS, TASK_KINDS, Tier

SIM_URL = "http://sim.test:9999/v1"
QUALITY_TABLE = Path(__file__).resolve().parents[4] / "shared" / "data" / "model_quality.md"
MD_NAMES = {"mistral-large 3": "mistral-large-latest", "mistral-small 3.2": "mistral-small-latest"}


@pytest.fixture(scope="module")
def shipped() -> CatalogFile:
    return read_catalog()


@pytest.fixture
def write_catalog(tmp_path: Path):
    """Write a catalog YAML from a list of entry dicts (or raw text) and return its path."""
    count = 0

    def write(entries: list[dict] | str) -> Path:
        nonlocal count
        count += 1
        path = tmp_path / f"catalog-{count}.yaml"
        text = entries if isinstance(entries, str) else yaml.safe_dump({"model_list": entries})
        path.write_text(text)
        return path

    return write


def entry(name: str = "m", **info) -> dict:
    """A valid catalog entry for a model LiteLLM knows, with model_info overrides."""
    model = info.pop("model", "gpt-4.1-mini")
    model_info = {"tier": "fast", "quality": {"general": 0.5}, "expected_latency_s": 1.0}
    model_info.update(info)
    return {"model_name": name, "litellm_params": {"model": model}, "model_info": model_info}


def provider(litellm_model: str) -> str:
    if "/" in litellm_model:
        return litellm_model.split("/", 1)[0]
    return str(model_cost_map()[litellm_model]["litellm_provider"])


def test_shipped_catalog_resolves_offline_and_cloud(shipped: CatalogFile) -> None:
    for profile in ("offline", "cloud"):
        catalog = resolve(
            shipped, profile=profile, simulator_url=SIM_URL, model_cost=model_cost_map()
        )
        assert [m.name for m in catalog.models] == [e.model_name for e in shipped.model_list]
        assert catalog.profile == profile


def test_every_shipped_model_is_priced_by_litellm(shipped: CatalogFile) -> None:
    cost = model_cost_map()
    for item in shipped.model_list:
        known = cost[item.litellm_params["model"]]
        assert known["input_cost_per_token"] > 0, item.model_name
        assert known["output_cost_per_token"] > 0, item.model_name


def test_shipped_catalog_spans_providers_and_tiers(shipped: CatalogFile) -> None:
    providers = {provider(item.litellm_params["model"]) for item in shipped.model_list}
    tiers = {item.model_info.tier for item in shipped.model_list}

    assert len(providers) >= 4, providers
    assert {"openai", "anthropic"} <= providers
    assert tiers == set(QUALITY_TIERS)


def test_tier_follows_mean_quality(shipped: CatalogFile) -> None:
    for item in shipped.model_list:
        mean = statistics.mean(item.model_info.quality[kind] for kind in TASK_KINDS)
        tier = item.model_info.tier
        if tier is Tier.PREMIUM:
            assert mean >= 0.85, (item.model_name, mean)
        elif tier is Tier.BALANCED:
            assert 0.65 <= mean < 0.85, (item.model_name, mean)
        else:
            assert mean < 0.65, (item.model_name, mean)


def quality_table() -> dict[str, dict[str, float]]:
    """The "Suggested quality 0-1" table of model_quality.md, by catalog name."""
    text = QUALITY_TABLE.read_text()
    section = text.split("## Suggested quality", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    columns = {
        "general": header.index("General"),
        "coding": header.index("Coding"),
        "extraction": header.index("Extract floored"),
    }
    table = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        name = MD_NAMES.get(cells[0], cells[0])
        table[name] = {kind: float(cells[index]) for kind, index in columns.items()}
    return table


def test_quality_matches_the_derived_table(shipped: CatalogFile) -> None:
    if not QUALITY_TABLE.exists():
        pytest.skip(f"quality table not found at {QUALITY_TABLE} (shared/ is beside the clone)")
    table = quality_table()
    assert len(table) >= 12

    for item in shipped.model_list:
        assert item.model_name in table, f"{item.model_name} missing from {QUALITY_TABLE.name}"
        assert dict(item.model_info.quality) == table[item.model_name], item.model_name


def test_offline_profile_calls_the_simulator_at_the_real_price(shipped: CatalogFile) -> None:
    cost = model_cost_map()

    catalog = resolve(shipped, profile="offline", simulator_url=SIM_URL, model_cost=cost)

    for model, item in zip(catalog.models, shipped.model_list, strict=True):
        real = item.litellm_params["model"]
        assert model.litellm_params == {
            "model": f"openai/{model.name}",
            "api_base": SIM_URL,
            "api_key": SIMULATOR_API_KEY,
        }
        assert model.price_model == real
        assert model.input_cost_per_token == cost[real]["input_cost_per_token"]
        assert model.output_cost_per_token == cost[real]["output_cost_per_token"]
        assert model.context_window == cost[real]["max_input_tokens"]


def test_cloud_profile_keeps_params_and_reads_env_secrets(
    write_catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given
    monkeypatch.setenv("CHORDAL_TEST_KEY", "sk-secret")
    raw = entry("m")
    raw["litellm_params"].update(api_key="os.environ/CHORDAL_TEST_KEY", api_base="https://x/v1")
    catalog_file = read_catalog(write_catalog([raw]))

    # When
    model = resolve(
        catalog_file, profile="cloud", simulator_url=SIM_URL, model_cost=model_cost_map()
    ).get("m")

    # Then
    assert model.litellm_params == {
        "model": "gpt-4.1-mini",
        "api_key": "sk-secret",
        "api_base": "https://x/v1",
    }


def test_model_info_overrides_win_over_litellm(write_catalog) -> None:
    # Given
    path = write_catalog(
        [
            entry(
                "custom",
                input_cost_per_token=1e-3,
                output_cost_per_token=2e-3,
                max_input_tokens=1234,
                max_output_tokens=56,
            )
        ]
    )

    # When
    model = resolve(
        read_catalog(path), profile="cloud", simulator_url=SIM_URL, model_cost=model_cost_map()
    ).get("custom")

    # Then
    assert (model.input_cost_per_token, model.output_cost_per_token) == (1e-3, 2e-3)
    assert (model.context_window, model.max_output_tokens) == (1234, 56)
    assert model.price_source == "catalog"


def test_base_model_prices_an_unknown_deployment(write_catalog) -> None:
    cost = model_cost_map()
    path = write_catalog([entry("local", model="openai/my-finetune", base_model="gpt-5-mini")])

    model = resolve(
        read_catalog(path), profile="cloud", simulator_url=SIM_URL, model_cost=cost
    ).get("local")

    assert model.price_model == "gpt-5-mini"
    assert model.input_cost_per_token == cost["gpt-5-mini"]["input_cost_per_token"]
    assert model.output_cost_per_token == cost["gpt-5-mini"]["output_cost_per_token"]
    assert model.litellm_params["model"] == "openai/my-finetune"
    assert model.price_source == "litellm"


def test_unpriced_model_is_a_configuration_error(write_catalog) -> None:
    path = write_catalog([entry("mystery", model="openai/not-a-real-model-xyz")])

    # An unpriced entry is skipped; a file left with nothing to route to is the error.
    with pytest.raises(ConfigurationError, match=r'"mystery".*not-a-real-model-xyz'):
        resolve(
            read_catalog(path),
            profile="offline",
            simulator_url=SIM_URL,
            model_cost=model_cost_map(),
        )


def test_half_a_price_override_is_not_enough(write_catalog) -> None:
    path = write_catalog(
        [entry("half", model="openai/not-a-real-model-xyz", input_cost_per_token=1e-6)]
    )

    with pytest.raises(ConfigurationError, match='"half"'):
        resolve(
            read_catalog(path), profile="cloud", simulator_url=SIM_URL, model_cost=model_cost_map()
        )


def test_scalar_quality_is_the_general_score(write_catalog) -> None:
    item = read_catalog(write_catalog([entry(quality=0.4)])).model_list[0]

    assert item.model_info.quality == {"general": 0.4}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"quality": {"general": 1.2}}, "between 0 and 1"),
        ({"quality": {"general": -0.1}}, "between 0 and 1"),
        ({"quality": {"coding": 0.5}}, "'general'"),
        ({"tier": "gold"}, "model_info.tier"),
        ({"expected_latency_s": 0}, "expected_latency_s"),
    ],
)
def test_invalid_model_info_is_a_configuration_error(write_catalog, change, problem) -> None:
    path = write_catalog([entry("ok"), entry("bad", **change)])

    with pytest.raises(ConfigurationError) as caught:
        read_catalog(path)

    message = str(caught.value)
    assert problem in message
    assert str(path) in message
    assert 'catalog entry 2 (model_name "bad"): model_info.' in message


def test_a_litellm_proxy_config_with_mistakes_names_each_entry_and_field(write_catalog) -> None:
    # Given: a LiteLLM proxy config with a mistake in each of two entries
    path = write_catalog(LITELLM_CONFIG_INVALID)

    # When
    with pytest.raises(ConfigurationError) as caught:
        read_catalog(path)

    # Then: a header and one readable line per problem, naming the entry and the field
    header, *lines = str(caught.value).splitlines()
    assert header == f"invalid catalog {path}:"
    assert [line.strip() for line in lines] == [
        'catalog entry 1 (model_name "gpt-4o"): model_info.tier: got "gold"; expected one of '
        "fast, balanced, premium, local",
        'catalog entry 2 (model_name "claude-sonnet"): litellm_params: litellm_params.model is '
        "required",
        'catalog entry 2 (model_name "claude-sonnet"): model_info.rpm: got -5; should be greater '
        "than 0",
    ]
    # ...and none of pydantic's dump: no input echoed back, no links, nothing chained
    assert "input_value" not in str(caught.value)
    assert "errors.pydantic.dev" not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"tier": "gold"}, 'model_info.tier: got "gold"; expected one of fast, balanced, premium'),
        (
            {"quality": {"general": 0.5, "writing": 0.3}},
            'model_info.quality: key "writing" is not allowed; expected one of general, coding',
        ),
        ({"expected_latency_s": "slow"}, 'model_info.expected_latency_s: got "slow"; should be'),
        ({"rpm": -3}, "model_info.rpm: got -3; should be greater than 0"),
        ({"quality": {"coding": 0.5}}, "model_info.quality: quality needs a 'general' score"),
    ],
    ids=["enum", "mapping-key", "number", "bound", "own-validator"],
)
def test_each_kind_of_problem_reads_as_one_line(write_catalog, change, line) -> None:
    # Given: the third entry of a catalog has one bad field
    path = write_catalog([entry("a"), entry("b"), entry("c", **change)])

    # When
    with pytest.raises(ConfigurationError) as caught:
        read_catalog(path)

    # Then
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == 1
    assert lines[0].strip().startswith(f'catalog entry 3 (model_name "c"): {line}')


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", "catalog: got nothing; expected a mapping with model_list"),
        ("- 1\n", "catalog: got a list; expected a mapping with model_list"),
        ("other: 1\n", "catalog: model_list: missing; expected a list, each a mapping with"),
        ("model_list: [oops]\n", 'catalog entry 1: got "oops"; expected a mapping with'),
    ],
    ids=["empty-file", "a-list", "no-model-list", "entry-not-a-mapping"],
)
def test_problems_outside_an_entry_read_as_one_line(write_catalog, text: str, line) -> None:
    with pytest.raises(ConfigurationError) as caught:
        read_catalog(write_catalog(text))

    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == 1
    assert lines[0].strip().startswith(line)


def test_missing_litellm_model_is_a_configuration_error(write_catalog) -> None:
    raw = entry("bad")
    raw["litellm_params"] = {"api_base": "https://x/v1"}

    with pytest.raises(ConfigurationError, match=r"litellm_params\.model is required"):
        read_catalog(write_catalog([raw]))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("model_list: []\n", "invalid catalog"),
        ("not_a_catalog: 1\n", "invalid catalog"),
        ("model_list: [\n", "cannot read catalog"),
    ],
    ids=["empty", "wrong-key", "bad-yaml"],
)
def test_unreadable_catalog_is_a_configuration_error(write_catalog, text: str, problem) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        read_catalog(write_catalog(textwrap.dedent(text)))


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(str(tmp_path / "nope.yaml"))):
        read_catalog(tmp_path / "nope.yaml")


def test_unknown_model_info_keys_are_kept(write_catalog) -> None:
    item = read_catalog(write_catalog([entry(id="deployment-1", region="eu")])).model_list[0]

    assert isinstance(item, CatalogEntry)
    assert item.model_info.id == "deployment-1"
    assert item.model_info.model_extra == {"region": "eu"}


# --- the local tier's catalog -------------------------------------------------------------------

LOCAL_URL = "http://127.0.0.1:9876/v1"


def settings_for(**values) -> Settings:
    """Settings with only ``values`` set (nothing read from the machine's CHORDAL_* variables)."""
    return Settings.model_validate(values)


def test_local_models_join_only_when_the_local_tier_is_on() -> None:
    off = read_catalog_for(settings_for())
    on = read_catalog_for(settings_for(local_model=True))

    assert [e.model_name for e in off.model_list] == [
        e.model_name for e in read_catalog().model_list
    ]
    assert {e.model_info.tier for e in off.model_list} == set(QUALITY_TIERS)
    local = [e for e in on.model_list if e.model_info.tier is Tier.LOCAL]
    assert [e.model_name for e in local] == ["smollm2"]
    assert on.model_list[: len(off.model_list)] == off.model_list


def test_shipped_local_model_is_free_and_weaker_than_every_provider_model(
    shipped: CatalogFile,
) -> None:
    (smollm2,) = read_catalog(default_local_catalog_path()).model_list
    info = smollm2.model_info

    assert (info.input_cost_per_token, info.output_cost_per_token) == (0.0, 0.0)
    # Exempt from the fast/balanced/premium rule by design: its tier is where it runs. Its
    # quality still sits below every provider model's on every kind.
    for kind in TASK_KINDS:
        assert info.quality[kind] < min(e.model_info.quality[kind] for e in shipped.model_list)
    # llama.cpp's server runs it with a 2048-token context: prompt and answer share it.
    assert info.max_input_tokens + info.max_output_tokens <= 2048


@pytest.mark.parametrize("profile", ["offline", "cloud"])
def test_local_model_is_called_at_the_local_server_in_both_profiles(profile) -> None:
    settings = settings_for(local_model_url=LOCAL_URL, profile=profile)

    catalog = catalog_for(settings, model_cost=model_cost_map())
    model = catalog.get("smollm2")

    assert model.tier is Tier.LOCAL
    assert model.litellm_params == {
        "model": "openai/smollm2",
        "api_base": LOCAL_URL,
        "api_key": LOCAL_API_KEY,
    }
    assert model.provider == "local"
    assert model.price_source == "catalog"
    assert model.cost(prompt_tokens=1_000, completion_tokens=500) == 0.0
    assert (model.context_window, model.max_output_tokens) == (1536, 512)


def test_a_local_entry_keeps_its_own_server_and_key(write_catalog) -> None:
    raw = entry("ollama", model="openai/llama3.2", tier="local")
    raw["litellm_params"].update(api_base="http://gpu-box:11434/v1", api_key="sk-local")
    raw["model_info"].update(input_cost_per_token=0, output_cost_per_token=0)
    settings = settings_for(local_model_url=LOCAL_URL, local_catalog_path=write_catalog([raw]))

    model = catalog_for(settings, model_cost=model_cost_map()).get("ollama")

    assert model.litellm_params["api_base"] == "http://gpu-box:11434/v1"
    assert model.litellm_params["api_key"] == "sk-local"


def test_a_local_tier_without_a_server_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CHORDAL_LOCAL_MODEL_URL"):
        catalog_for(settings_for(local_model=True), model_cost=model_cost_map())


def test_a_local_model_in_the_main_catalog_is_a_configuration_error(write_catalog) -> None:
    path = write_catalog([entry("m"), entry("mine", tier="local")])

    with pytest.raises(ConfigurationError, match="CHORDAL_LOCAL_CATALOG_PATH"):
        read_catalog_for(settings_for(catalog_path=path))


def test_a_provider_model_in_the_local_catalog_is_a_configuration_error(write_catalog) -> None:
    path = write_catalog([entry("cloudy", tier="fast")])

    with pytest.raises(ConfigurationError, match="holds only tier local"):
        read_catalog_for(settings_for(local_model=True, local_catalog_path=path))


def test_a_name_in_both_catalogs_is_a_configuration_error(write_catalog) -> None:
    main = write_catalog([entry("twin")])
    local = write_catalog([entry("twin", tier="local")])

    with pytest.raises(ConfigurationError, match="both name twin"):
        read_catalog_for(
            settings_for(catalog_path=main, local_model=True, local_catalog_path=local)
        )


# --- deployments ---------------------------------------------------------------------------------


def resolved(entries: list[dict], profile: str = "cloud") -> list:
    file = CatalogFile.model_validate({"model_list": entries})
    return list(
        resolve(file, profile=profile, simulator_url=SIM_URL, model_cost=model_cost_map()).models
    )


def test_deployment_id_is_model_info_id_where_given() -> None:
    (model,) = resolved([entry("m", id="eu-1")])
    assert model.deployment_id == "eu-1"


def test_deployment_id_hashes_the_written_params_the_same_in_every_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = {**entry("m"), "litellm_params": {"model": "gpt-4.1-mini", "api_key": "os.environ/K"}}
    b = {**entry("m"), "litellm_params": {"model": "azure/gpt-4.1-mini", "api_base": "x"}}
    monkeypatch.setenv("K", "secret")
    ids = [model.deployment_id for model in resolved([a, b], profile="offline")]

    assert ids[0].startswith("m#")
    assert len(ids[0]) == len("m#") + 8
    assert ids[0] != ids[1]  # one group, two deployments
    assert ids == [model.deployment_id for model in resolved([a, b], profile="cloud")]


def test_weight_is_kept_for_routing_and_never_sent_to_the_provider() -> None:
    weighted = {**entry("m"), "litellm_params": {"model": "gpt-4.1-mini", "weight": 3}}
    (model,) = resolved([weighted])

    assert model.weight == 3.0
    assert "weight" not in model.litellm_params


# --- a LiteLLM proxy config, as LiteLLM's docs write one -----------------------------------------

LITELLM_CONFIG = Path(__file__).parent / "data" / "litellm_proxy_config.yaml"
EXPECTED_SKIPS = [
    'catalog entry 7 (model_name "my-finetune"): skipped: LiteLLM has no price for '
    "'openai/ft:gpt-4o-mini:acme::abc123'; set model_info.base_model to a model LiteLLM knows, "
    "or input_cost_per_token and output_cost_per_token",
    'catalog entry 8 (model_name "embedding"): skipped: mode embedding: Chordal routes chat '
    "completions only",
    'catalog entry 9 (model_name "dall-e-3"): skipped: mode image_generation: Chordal routes '
    "chat completions only",
    'catalog entry 10 (model_name "openai/*"): skipped: a wildcard entry: Chordal routes to '
    "named models only; list each model",
    'catalog entry 11 (model_name "anthropic/*"): skipped: a wildcard entry: Chordal routes to '
    "named models only; list each model",
]
EXPECTED_NOTES = [
    "litellm_settings.num_retries: ignored: Chordal is the retry layer (LiteLLM makes one "
    "attempt per call)",
    "litellm_settings.success_callback: ignored: Chordal records every call itself (metrics, "
    "traces, the cost ledger)",
    "router_settings.redis_host, redis_port, redis_password: ignored: Chordal's own broker "
    "(CHORDAL_BROKER_URL) holds the fleet's state",
    "general_settings: ignored: the LiteLLM proxy server's own settings",
    'catalog entry 3 (model_name "gpt-5-mini"): litellm_params.num_retries: ignored: Chordal is '
    "the retry layer (LiteLLM makes one attempt per call)",
]


@pytest.fixture
def litellm_catalog():
    def load(profile: str = "cloud"):
        return resolve(
            read_catalog(LITELLM_CONFIG),
            profile=profile,
            simulator_url=SIM_URL,
            model_cost=model_cost_map(),
        )

    return load


def test_litellm_own_proxy_config_loads_with_no_edits(litellm_catalog) -> None:
    catalog = litellm_catalog()

    assert [(m.name, m.deployment_id[:7]) for m in catalog.models] == [
        ("gpt-4o", "gpt-4o#"),
        ("gpt-4o", "azure-e"),
        ("gpt-5-mini", "gpt-5-m"),
        ("claude-sonnet", "claude-"),
        ("gemini-flash", "gemini-"),
        ("mistral-large", "mistral"),
    ]
    assert {m.provider for m in catalog.models} == {
        "openai", "azure", "anthropic", "gemini", "mistral"
    }  # fmt: skip
    assert [str(item) for item in catalog.skipped] == EXPECTED_SKIPS
    assert list(catalog.notes) == EXPECTED_NOTES
    assert list(catalog.warnings) == EXPECTED_SKIPS + EXPECTED_NOTES


def test_litellm_config_tiers_are_inferred_from_the_price(litellm_catalog) -> None:
    tiers = {(m.name, m.tier, m.tier_source) for m in litellm_catalog().models}

    # Blended (mean of input and output) $/1M: gpt-4o 6.25, gpt-5-mini 1.125, Sonnet 9,
    # Flash 1.4, Mistral Large 1.0 -- against fast <= 1, balanced <= 5.
    assert tiers == {
        ("gpt-4o", Tier.PREMIUM, "inferred"),
        ("gpt-5-mini", Tier.BALANCED, "inferred"),
        ("claude-sonnet", Tier.PREMIUM, "inferred"),
        ("gemini-flash", Tier.BALANCED, "inferred"),
        ("mistral-large", Tier.FAST, "inferred"),
    }


def test_litellm_config_quality_comes_from_the_shipped_table(litellm_catalog) -> None:
    models = {m.name: m for m in litellm_catalog().models}

    # Dated snapshots and provider prefixes name the table's models...
    assert models["gpt-5-mini"].quality_by_kind == {
        "general": 0.78, "coding": 0.82, "extraction": 0.90
    }  # fmt: skip
    assert models["claude-sonnet"].quality("coding") == 0.78
    assert {models[name].quality_source for name in ("gpt-5-mini", "mistral-large")} == {"table"}
    # ...and a model it does not list is unknown, scored 0.
    assert models["gpt-4o"].quality_source == "unknown"
    assert not models["gpt-4o"].quality_known
    assert models["gpt-4o"].quality("general") == 0.0


def test_litellm_config_deployments_of_a_group_keep_their_own_params(litellm_catalog) -> None:
    openai, azure = (m for m in litellm_catalog().models if m.name == "gpt-4o")

    # The Azure deployment is priced by its base_model; each has its own limits and weight.
    assert (azure.price_model, azure.provider, azure.deployment_id) == (
        "azure/gpt-4o", "azure", "azure-eu"
    )  # fmt: skip
    assert (openai.price_model, openai.provider) == ("gpt-4o", "openai")
    assert (openai.rpm, openai.tpm, openai.weight) == (500, None, 1.0)
    assert (azure.rpm, azure.tpm, azure.weight) == (300, 300_000, 2.0)
    # The entry's own timeout wins over litellm_settings.request_timeout; neither is a kwarg.
    assert (openai.timeout_s, azure.timeout_s) == (30, 45)
    assert "timeout" not in azure.litellm_params
    assert azure.litellm_params["model"] == "azure/gpt-4o-eu"
    assert azure.litellm_params["drop_params"] is True  # litellm_settings.drop_params


def test_litellm_config_settings_blocks_map_onto_chordal(litellm_catalog) -> None:
    catalog = litellm_catalog("offline")

    assert catalog.deployment_pick == "least-busy"  # routing_strategy: least-busy
    assert dict(catalog.aliases) == {"gpt-4": "gpt-4o", "claude": "claude-sonnet"}
    assert catalog.get("claude") is catalog.get("claude-sonnet")
    assert catalog.group_name("gpt-4") == "gpt-4o"
    # The offline profile serves every deployment from the simulator, under its group's name.
    assert {m.litellm_params["model"] for m in catalog.models if m.name == "gpt-4o"} == {
        "openai/gpt-4o"
    }
    assert all(m.litellm_params["drop_params"] is True for m in catalog.models)


def test_retries_of_an_entry_are_never_sent(litellm_catalog) -> None:
    model = litellm_catalog().get("gpt-5-mini")

    assert "num_retries" not in model.litellm_params
    assert model.price_model == "gpt-5-mini-2025-08-07"


def test_catalog_for_logs_each_skip_and_note_once(caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(catalog_path=LITELLM_CONFIG, profile="offline")

    with caplog.at_level("WARNING", logger="routing.catalog"):
        catalog_for(settings, model_cost=model_cost_map())

    logged = [record.getMessage() for record in caplog.records]
    assert logged == [
        f"catalog {LITELLM_CONFIG}: {line}" for line in EXPECTED_SKIPS + EXPECTED_NOTES
    ]


def test_a_file_with_nothing_to_route_to_is_a_configuration_error(write_catalog) -> None:
    from tests.support import LITELLM_CONFIG_UNROUTABLE

    path = write_catalog(LITELLM_CONFIG_UNROUTABLE)

    with pytest.raises(ConfigurationError) as caught:
        catalog_for(settings_for(catalog_path=path), model_cost=model_cost_map())

    header, *lines = str(caught.value).splitlines()
    assert header == f"catalog {path}: no deployment in the catalog can be routed to:"
    assert [line.strip()[:50] for line in lines] == [
        'catalog entry 1 (model_name "embedding"): skipped:',
        'catalog entry 2 (model_name "gpt-4o"): skipped: Li',
        'catalog entry 3 (model_name "*"): skipped: a wildc',
    ]


def test_mode_in_model_info_wins_over_litellm_map(write_catalog) -> None:
    # gpt-4.1-mini is a chat model to LiteLLM; the entry says it serves embeddings here.
    path = write_catalog([entry("chat"), entry("odd", mode="embedding"), entry("r", mode="chat")])

    catalog = resolve(
        read_catalog(path), profile="cloud", simulator_url=SIM_URL, model_cost=model_cost_map()
    )

    assert [m.name for m in catalog.models] == ["chat", "r"]
    assert [item.index for item in catalog.skipped] == [2]


def test_explicit_prices_in_litellm_params_price_an_unknown_model(write_catalog) -> None:
    raw = {
        "model_name": "vllm",
        "litellm_params": {
            "model": "openai/facebook/opt-125m",
            "api_base": "http://gpu:8000/v1",
            "input_cost_per_token": 2e-7,
            "output_cost_per_token": 2e-7,
        },
    }

    (model,) = resolved([raw])

    assert (model.input_cost_per_token, model.price_source) == (2e-7, "catalog")
    assert (model.tier, model.tier_source) == (Tier.FAST, "inferred")
    assert model.expected_latency_s == 1.2  # the fast tier's default
    assert model.quality_source == "unknown"
    assert "input_cost_per_token" not in model.litellm_params


def test_written_fields_win_and_are_marked_as_the_catalog_s(shipped: CatalogFile) -> None:
    catalog = resolve(
        shipped, profile="offline", simulator_url=SIM_URL, model_cost=model_cost_map()
    )

    assert {(m.tier_source, m.quality_source) for m in catalog.models} == {("catalog", "catalog")}
    assert catalog.skipped == ()
    assert catalog.notes == ()


def test_several_deployments_of_one_name_in_a_file_are_one_group(write_catalog) -> None:
    path = write_catalog([entry("twin"), entry("twin", model="azure/gpt-4.1-mini")])
    settings = settings_for(catalog_path=path, local_model_url=LOCAL_URL)

    catalog = catalog_for(settings, model_cost=model_cost_map())

    assert [m.name for m in catalog.models] == ["twin", "twin", "smollm2"]


def test_included_files_add_their_entries(write_catalog, tmp_path: Path) -> None:
    (tmp_path / "more.yaml").write_text(yaml.safe_dump({"model_list": [entry("extra")]}))
    path = write_catalog("include: [more.yaml]\nmodel_list:\n  - " + json.dumps(entry("main")))

    assert [e.model_name for e in read_catalog(path).model_list] == ["main", "extra"]


def test_a_missing_included_file_is_a_configuration_error(write_catalog) -> None:
    path = write_catalog("include: [gone.yaml]\nmodel_list:\n  - " + json.dumps(entry("main")))

    with pytest.raises(ConfigurationError, match=r"gone\.yaml, included by"):
        read_catalog(path)


def test_a_bad_setting_is_named_like_a_bad_field(write_catalog) -> None:
    path = write_catalog(
        "model_list:\n  - " + json.dumps(entry("m")) + "\nlitellm_settings:\n  request_timeout: x\n"
    )

    with pytest.raises(ConfigurationError) as caught:
        read_catalog(path)

    assert (
        str(caught.value)
        .splitlines()[1]
        .strip()
        .startswith('catalog: litellm_settings.request_timeout: got "x"')
    )
