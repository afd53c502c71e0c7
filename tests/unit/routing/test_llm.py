"""The LiteLLM seam: prices, token counts and the translation of provider errors."""

from __future__ import annotations

import httpx
import litellm
import pytest

from routing.catalog import Model
from routing.llm import _translated_errors, count_prompt_tokens, model_cost_map, price
from workers.errors import (
    AgentFailed,
    ChordalError,
    ConfigurationError,
    InvalidJob,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RetryLater,
)
from workers.tiers import Tier


@pytest.fixture
def make_model():
    """A catalog Model priced as ``price_model``, with its own per-token prices."""

    def make(price_model: str = "gpt-5-mini", **fields) -> Model:
        values = {
            "name": "under-test",
            "tier": Tier.BALANCED,
            "litellm_params": {"model": price_model},
            "price_model": price_model,
            "input_cost_per_token": 3e-6,
            "output_cost_per_token": 7e-6,
            "context_window": 100_000,
            "max_output_tokens": 4_096,
            "expected_latency_s": 1.0,
            "quality_by_kind": {"general": 0.5},
        }
        values.update(fields)
        return Model(**values)

    return make


def http_response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, headers=headers, request=httpx.Request("POST", "http://provider.test/v1")
    )


def test_price_is_tokens_times_litellm_prices(make_model) -> None:
    known = model_cost_map()["gpt-5-mini"]
    model = make_model("gpt-5-mini")

    cost = price(model, prompt_tokens=1_000, completion_tokens=500)

    expected = 1_000 * known["input_cost_per_token"] + 500 * known["output_cost_per_token"]
    assert cost == pytest.approx(expected)
    assert cost > 0


def test_price_matches_the_catalog_model_own_cost(make_model) -> None:
    known = model_cost_map()["claude-haiku-4-5"]
    model = make_model(
        "claude-haiku-4-5",
        input_cost_per_token=known["input_cost_per_token"],
        output_cost_per_token=known["output_cost_per_token"],
    )

    assert price(model, prompt_tokens=321, completion_tokens=123) == pytest.approx(
        model.cost(prompt_tokens=321, completion_tokens=123)
    )


def test_price_of_a_model_unknown_to_litellm_uses_its_own_prices(make_model) -> None:
    model = make_model("openai/chordal-private-model", input_cost_per_token=2e-6,
                       output_cost_per_token=5e-6)  # fmt: skip
    assert "openai/chordal-private-model" not in litellm.model_cost

    cost = price(model, prompt_tokens=1_000, completion_tokens=200)

    assert cost == pytest.approx(1_000 * 2e-6 + 200 * 5e-6)


def test_count_prompt_tokens_grows_with_the_input() -> None:
    short = count_prompt_tokens([{"role": "user", "content": "Hello"}])
    longer = count_prompt_tokens(
        [
            {"role": "system", "content": "You are a careful analyst."},
            {"role": "user", "content": "Hello " * 200},
        ]
    )

    assert isinstance(short, int)
    assert short > 0
    assert longer > short + 150


def raise_through(make_model, exc: Exception) -> ChordalError:
    """What _translated_errors turns ``exc`` into."""
    with pytest.raises(ChordalError) as caught, _translated_errors(make_model(name="m-1")):
        raise exc
    assert caught.value.__cause__ is exc
    assert "m-1" in str(caught.value)
    return caught.value


def test_rate_limit_carries_retry_after(make_model) -> None:
    exc = litellm.RateLimitError(
        message="slow down", llm_provider="openai", model="x",
        response=http_response(429, **{"retry-after": "7"}),
    )  # fmt: skip

    error = raise_through(make_model, exc)

    assert type(error) is RateLimited
    assert error.retry_after == 7.0
    assert "slow down" in str(error)


@pytest.mark.parametrize("header", [{}, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}])
def test_rate_limit_without_numeric_retry_after(make_model, header: dict) -> None:
    exc = litellm.RateLimitError(
        message="slow", llm_provider="openai", model="x", response=http_response(429, **header)
    )

    error = raise_through(make_model, exc)

    assert type(error) is RateLimited
    assert error.retry_after is None


def provider_failures() -> list[Exception]:
    common = {"message": "upstream broke", "llm_provider": "openai", "model": "x"}
    return [
        litellm.InternalServerError(**common, response=http_response(500)),
        litellm.ServiceUnavailableError(**common, response=http_response(503)),
        litellm.BadGatewayError(**common, response=http_response(502)),
        litellm.APIConnectionError(**common),
        litellm.APIError(status_code=418, **common),
    ]


@pytest.mark.parametrize("exc", provider_failures(), ids=lambda exc: type(exc).__name__)
def test_provider_failures_are_retryable(make_model, exc: Exception) -> None:
    error = raise_through(make_model, exc)

    assert type(error) is ProviderUnavailable
    assert isinstance(error, RetryLater)
    assert type(exc).__name__ in str(error)


def test_a_timeout_is_retryable_and_says_so(make_model) -> None:
    exc = litellm.Timeout(message="took too long", llm_provider="openai", model="x")

    error = raise_through(make_model, exc)

    assert type(error) is ProviderTimeout
    assert isinstance(error, ProviderUnavailable)
    assert "no answer in time" in str(error)


def test_context_window_exceeded_is_the_job_input(make_model) -> None:
    exc = litellm.ContextWindowExceededError(
        message="too long", model="x", llm_provider="openai", response=http_response(400)
    )

    error = raise_through(make_model, exc)

    assert type(error) is InvalidJob
    assert error.field == "input"


@pytest.mark.parametrize(
    "exc",
    [
        litellm.BadRequestError(message="bad schema", model="x", llm_provider="openai"),
        litellm.ContentPolicyViolationError(message="refused", model="x", llm_provider="openai"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_rejected_request_is_an_agent_failure(make_model, exc: Exception) -> None:
    error = raise_through(make_model, exc)

    assert type(error) is AgentFailed
    assert not isinstance(error, RetryLater)


@pytest.mark.parametrize(
    "exc",
    [
        litellm.AuthenticationError(message="bad key", llm_provider="openai", model="x"),
        litellm.PermissionDeniedError(
            message="no access", llm_provider="openai", model="x", response=http_response(403)
        ),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_refused_credentials_are_a_configuration_error(make_model, exc: Exception) -> None:
    assert type(raise_through(make_model, exc)) is ConfigurationError


def test_other_errors_pass_through(make_model) -> None:
    with pytest.raises(KeyError), _translated_errors(make_model()):
        raise KeyError("not a provider error")


def test_success_is_untouched(make_model) -> None:
    with _translated_errors(make_model()):
        value = 42

    assert value == 42


def test_price_honours_catalog_price_overrides(make_model) -> None:
    # Given: a negotiated price on a model LiteLLM also prices (the router budgets with it)
    model = make_model(
        "gpt-5-mini", input_cost_per_token=1e-3, output_cost_per_token=2e-3, price_source="catalog"
    )

    # Then: the billed cost is the one the router budgeted
    assert price(model, prompt_tokens=1_000, completion_tokens=100) == pytest.approx(
        model.cost(prompt_tokens=1_000, completion_tokens=100)
    )


@pytest.mark.parametrize(
    "exc",
    [
        litellm.NotFoundError(message="no such model", model="x", llm_provider="openai"),
        litellm.UnprocessableEntityError(
            message="bad body", model="x", llm_provider="openai", response=http_response(422)
        ),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_every_provider_status_error_is_translated(make_model, exc: Exception) -> None:
    with pytest.raises(ChordalError), _translated_errors(make_model()):
        raise exc
