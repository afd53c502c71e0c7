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
from typing import Any, Protocol

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


class TokenSink(Protocol):
    """Where a streamed call's text goes as it arrives (a job's event stream)."""

    async def send(self, text: str) -> None:
        """Take the next piece of the answer."""

    async def close(self) -> None:
        """The answer is complete: flush what is held."""


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
    tokens: TokenSink | None = None,
) -> Completion:
    """Call ``model`` once; raises RetryLater, InvalidJob or AgentFailed subclasses on failure.

    With ``tokens`` the call streams (``stream=True``) and each piece of the answer goes there
    as it arrives; the Completion is the same as without."""
    kwargs: dict[str, Any] = dict(model.litellm_params)
    if response_format is not None:
        kwargs["response_format"] = dict(response_format)
    if headers:
        kwargs["extra_headers"] = dict(headers)
    if tokens is not None:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    started = time.perf_counter()
    with _translated_errors(model):
        response = await litellm.acompletion(
            messages=list(messages),
            max_tokens=max_tokens,
            timeout=timeout,
            num_retries=0,
            **kwargs,
        )
        if tokens is not None:
            response = await _streamed(response, messages, tokens)
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


async def _streamed(stream: Any, messages: Sequence[Message], tokens: TokenSink) -> Any:
    # The chunks as they come, then LiteLLM's own assembly of them: the same response (content,
    # usage, finish reason) a call without streaming returns.
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            await tokens.send(text)
    await tokens.close()
    built = litellm.stream_chunk_builder(chunks, messages=list(messages))
    if built is None:
        raise ProviderUnavailable("the provider's stream ended without an answer")
    built._hidden_params = getattr(stream, "_hidden_params", None) or {}
    return built


def _rate_headers(response: Any) -> dict[str, str]:
    # The provider's x-ratelimit-* headers, which LiteLLM keeps among its hidden params (with
    # an ``llm_provider-`` prefix on a stream).
    hidden = getattr(response, "_hidden_params", None) or {}
    headers = hidden.get("additional_headers") or {}
    named = {str(key).lower().removeprefix("llm_provider-"): val for key, val in headers.items()}
    return {key: str(val) for key, val in named.items() if key.startswith("x-ratelimit-")}


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
