"""The LiteLLM call: one completion against one catalog deployment, with its cost.

LiteLLM retries nothing here (``num_retries=0``): Celery and the router are the one retry layer.
Provider failures are translated into Chordal's error tree so callers decide by kind: retry on
another model (:class:`~workers.errors.RetryLater`), fix the job
(:class:`~workers.errors.InvalidJob`), or give up (:class:`~workers.errors.AgentFailed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import litellm
import openai

from routing.catalog import Model
from workers.errors import (
    AgentFailed,
    ConfigurationError,
    InvalidJob,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)

Message = Mapping[str, Any]

litellm.suppress_debug_info = True
litellm.telemetry = False
# LiteLLM logs every call at INFO, prompt included; Chordal logs calls itself, without prompts.
logging.getLogger("LiteLLM").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Completion:
    """A model's answer with what it cost."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    finish_reason: str | None
    headers: Mapping[str, str] = field(default_factory=dict)


def model_cost_map() -> Mapping[str, Mapping[str, Any]]:
    """LiteLLM's bundled price and context-window map."""
    return litellm.model_cost  # type: ignore[no-any-return]


def count_prompt_tokens(messages: Sequence[Message]) -> int:
    """Prompt tokens for routing estimates, by LiteLLM's bundled default tokenizer (offline).

    One count serves every candidate: tokenizers differ by a few percent, well inside the
    precision of a routing estimate, and counting once keeps the decision cheap.
    """
    return int(litellm.token_counter(messages=list(messages)))


def price(model: Model, *, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for a call: LiteLLM's pricing of the model, or the catalog entry's own prices.

    LiteLLM's ``cost_per_token`` knows pricing rules a flat rate misses (long-context tiers),
    so it prices every model it knows that the catalog does not override.
    """
    if model.price_source == "catalog" or model.price_model not in litellm.model_cost:
        return model.cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    prompt_cost, completion_cost = litellm.cost_per_token(
        model=model.price_model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    return float(prompt_cost + completion_cost)


async def complete(
    model: Model,
    messages: Sequence[Message],
    *,
    max_tokens: int,
    timeout: float,
    response_format: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Completion:
    """Call ``model`` once; raises RetryLater, InvalidJob or AgentFailed subclasses on failure."""
    kwargs: dict[str, Any] = dict(model.litellm_params)
    if response_format is not None:
        kwargs["response_format"] = dict(response_format)
    if headers:
        kwargs["extra_headers"] = dict(headers)
    started = time.perf_counter()
    with _translated_errors(model):
        response = await litellm.acompletion(
            messages=list(messages),
            max_tokens=max_tokens,
            timeout=timeout,
            num_retries=0,
            **kwargs,
        )
    latency = time.perf_counter() - started
    choice = response.choices[0]
    usage = response.usage
    content = choice.message.content or ""
    return Completion(
        content=content,
        prompt_tokens=int(usage.prompt_tokens),
        completion_tokens=int(usage.completion_tokens),
        cost_usd=price(
            model,
            prompt_tokens=int(usage.prompt_tokens),
            completion_tokens=int(usage.completion_tokens),
        ),
        latency_s=latency,
        finish_reason=choice.finish_reason,
        headers=_rate_headers(response),
    )


def _rate_headers(response: Any) -> dict[str, str]:
    # The provider's x-ratelimit-* headers, which LiteLLM keeps among its hidden params.
    hidden = getattr(response, "_hidden_params", None) or {}
    headers = hidden.get("additional_headers") or {}
    return {
        str(key).lower(): str(value)
        for key, value in headers.items()
        if str(key).lower().startswith("x-ratelimit-")
    }


@contextmanager
def _translated_errors(model: Model) -> Iterator[None]:
    name = model.name
    try:
        yield
    except litellm.RateLimitError as exc:
        raise RateLimited(f"{name}: rate limited: {exc.message}", _retry_after(exc)) from exc
    except litellm.ContextWindowExceededError as exc:
        raise InvalidJob(f"{name}: prompt exceeds the context window", "input") from exc
    except (litellm.AuthenticationError, litellm.PermissionDeniedError) as exc:
        raise ConfigurationError(f"{name}: provider refused the credentials: {exc}") from exc
    except litellm.NotFoundError as exc:
        # The deployment is missing at the provider; another model can still serve the job.
        raise ProviderUnavailable(f"{name}: provider does not know the model: {exc}") from exc
    except litellm.UnprocessableEntityError as exc:
        raise AgentFailed(f"{name}: provider could not process the request: {exc}") from exc
    except litellm.Timeout as exc:
        raise ProviderTimeout(f"{name}: no answer in time: {exc.message}") from exc
    except (
        litellm.APIConnectionError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
        litellm.InternalServerError,
    ) as exc:
        raise ProviderUnavailable(f"{name}: {type(exc).__name__}: {exc.message}") from exc
    except litellm.BadRequestError as exc:
        raise AgentFailed(f"{name}: provider rejected the request: {exc.message}") from exc
    except openai.OpenAIError as exc:
        # Any other provider error (LiteLLM's all derive from the OpenAI SDK's) is the
        # provider's failure, not the job's.
        raise ProviderUnavailable(f"{name}: {type(exc).__name__}: {exc}") from exc


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
