"""OpenAI-compatible HTTP server that simulates LLM providers, with injectable faults."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from chordal.simulator.completion import (
    completion_object,
    count_tokens,
    prompt_tokens,
    reply,
    requested_tokens,
)
from chordal.simulator.profiles import ALL_MODELS, Decision, ModelProfile, SimConfig, decide
from chordal.simulator.ratelimit import RateLimits, Refusal
from chordal.simulator.schema import SchemaError
from chordal.simulator.stats import Stats
from chordal.simulator.streaming import FIRST_TOKEN_SHARE, stream

JOB_HEADER = "X-Chordal-Job"
ATTEMPT_HEADER = "X-Chordal-Attempt"
SEQ_HEADER = "X-Chordal-Sim-Seq"
LATENCY_HEADER = "X-Chordal-Sim-Latency"


@dataclass
class _State:
    initial: SimConfig
    config: SimConfig
    stats: Stats = field(default_factory=Stats)
    limits: RateLimits = field(default_factory=RateLimits)
    sequence: Counter[str] = field(default_factory=Counter)
    closing: asyncio.Event = field(default_factory=asyncio.Event)


STATE = web.AppKey("chordal_simulator_state", _State)


def build_app(config: SimConfig) -> web.Application:
    """Build the simulator application serving ``config``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = _State(initial=config, config=config)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/admin/config", _get_config)
    app.router.add_patch("/admin/faults", _patch_faults)
    app.router.add_post("/admin/reset", _reset)
    app.router.add_get("/admin/stats", _get_stats)
    app.router.add_post("/admin/stats/reset", _reset_stats)
    app.on_shutdown.append(_release_hung_requests)
    return app


async def _release_hung_requests(app: web.Application) -> None:
    # Without this a shutdown would wait out every simulated hang.
    app[STATE].closing.set()


def _error(
    status: int, message: str, *, kind: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _invalid(message: str) -> web.Response:
    return _error(400, message, kind="invalid_request_error", code="invalid_request")


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = await request.json()
        model, messages = _parse_chat(body)
    except ValueError as exc:
        return _invalid(str(exc))
    seq = state.sequence[model]
    state.sequence[model] += 1
    config = state.config
    profile, decision = config.profile_for(model), decide(config, model, seq=seq)
    # One clock reading serves the limiter and the arrival log, so they agree on every window.
    now = time.monotonic()
    tokens = requested_tokens(body, messages=messages, profile=profile)
    verdict = state.limits.admit(model, profile, tokens=tokens, now=now)
    job = request.headers.get(JOB_HEADER)
    state.stats.begin(model, job, at=now, admitted=verdict.refusal is None)
    try:
        refused = _refusal(
            state.stats,
            model,
            messages=messages,
            profile=profile,
            decision=decision,
            over_limit=verdict.refusal,
        )
        streamed = bool(body.get("stream"))
        response: web.StreamResponse
        if refused is not None:
            response = refused
        else:
            response = await _answer(
                state, body, model=model, messages=messages, profile=profile, decision=decision,
                wait_share=FIRST_TOKEN_SHARE if streamed else 1.0,
            )  # fmt: skip
        headers = {**verdict.headers, SEQ_HEADER: str(seq),
                   LATENCY_HEADER: f"{decision.latency_s:.6f}"}  # fmt: skip
        if streamed and response.status == 200 and isinstance(response, web.Response):
            completion = json.loads(response.text or "{}")
            spread = decision.latency_s * (1 - FIRST_TOKEN_SHARE)
            with contextlib.suppress(ConnectionResetError):
                response = await stream(request, completion, body=body, spread_s=spread,
                                        headers=headers)  # fmt: skip
    finally:
        state.stats.end(model)
    # aiohttp finishes a handler whose caller hung up; only an open connection gets the answer.
    if response.status == 200 and request.transport and not request.transport.is_closing():
        state.stats.delivered(job, request.headers.get(ATTEMPT_HEADER))
    if not response.prepared:
        response.headers.update(headers)
    return response


def _parse_chat(body: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise ValueError("`model` must be a non-empty string")
    if not isinstance(messages, list) or not messages:
        raise ValueError("`messages` must be a non-empty list")
    if not all(isinstance(m, dict) for m in messages):
        raise ValueError("every message must be an object")
    return model, messages


def _refusal(
    stats: Stats,
    model: str,
    *,
    messages: list[dict[str, Any]],
    profile: ModelProfile,
    decision: Decision,
    over_limit: Refusal | None,
) -> web.Response | None:
    """Return the immediate error response this request gets, if any."""
    # A provider's gateway enforces rate limits before the model is even reached.
    if over_limit is not None:
        stats.add(model, "over_limit")
        retry = {"Retry-After": str(over_limit.retry_after_s)}
        return _error(
            429, over_limit.message, kind=over_limit.kind, code="rate_limit_exceeded", headers=retry
        )
    if decision.outcome == "outage":
        stats.add(model, "outages")
        message = f"Simulated outage: model {model} is unavailable."
        return _error(503, message, kind="service_unavailable", code="service_unavailable")
    if decision.outcome == "rate_limited":
        stats.add(model, "rate_limited")
        retry = {"Retry-After": str(profile.retry_after_s)}
        message = f"Simulated rate limit for model {model}; retry after {profile.retry_after_s}s."
        return _error(429, message, kind="requests", code="rate_limit_exceeded", headers=retry)
    used = prompt_tokens(messages)
    if profile.context_window is not None and used > profile.context_window:
        stats.add(model, "bad_requests")
        message = (
            f"This model's maximum context length is {profile.context_window} tokens. "
            f"However, your messages resulted in {used} tokens (simulated)."
        )
        return _error(400, message, kind="invalid_request_error", code="context_length_exceeded")
    if decision.outcome == "error":
        stats.add(model, "errors")
        message = f"Simulated internal server error for model {model}."
        return _error(500, message, kind="server_error", code="internal_error")
    return None


async def _answer(
    state: _State,
    body: dict[str, Any],
    *,
    model: str,
    messages: list[dict[str, Any]],
    profile: ModelProfile,
    decision: Decision,
    wait_share: float = 1.0,
) -> web.Response:
    """Hang for a timeout fault, otherwise wait the sampled latency (``wait_share`` of it, when
    the rest is spent streaming) and complete."""
    stats = state.stats
    if decision.outcome == "timeout":
        stats.add(model, "timeouts")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.closing.wait(), profile.hang_s)
        return _error(504, f"Simulated timeout for model {model}.", kind="timeout", code="timeout")
    try:
        answer = reply(
            body, model, messages=messages, profile=profile, malformed=decision.malformed
        )
    except (ValueError, SchemaError) as exc:
        stats.add(model, "bad_requests")
        return _invalid(str(exc))
    await asyncio.sleep(decision.latency_s * wait_share)
    used, produced = prompt_tokens(messages), count_tokens(answer.content)
    stats.add(model, "ok")
    if answer.malformed:
        stats.add(model, "malformed")
    stats.add(model, "prompt_tokens", amount=used)
    stats.add(model, "completion_tokens", amount=produced)
    usage = {"prompt_tokens": used, "completion_tokens": produced, "total_tokens": used + produced}
    return web.json_response(
        completion_object(model, answer.content, finish_reason=answer.finish_reason, usage=usage)
    )


async def _models(request: web.Request) -> web.Response:
    names = sorted(request.app[STATE].config.models)
    data = [
        {"id": n, "object": "model", "created": 0, "owned_by": "chordal-simulator"} for n in names
    ]
    return web.json_response({"object": "list", "data": data})


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "simulated": True})


async def _get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].config.model_dump(mode="json"))


async def _patch_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
    except ValueError:
        return _invalid("the request body must be JSON")
    model = body.get("model") if isinstance(body, dict) else None
    changes = body.get("changes") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model or not isinstance(changes, dict):
        return _invalid('expected {"model": "<name>" | "*", "changes": {<profile fields>}}')
    try:
        state.config = state.config.patched(model, changes)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'changes'}: {e['msg']}" for e in exc.errors()
        )
        return _invalid(f"invalid fault changes: {problems}")
    profile = state.config.default if model == ALL_MODELS else state.config.profile_for(model)
    return web.json_response({"model": model, "profile": profile.model_dump(mode="json")})


async def _reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.config = state.initial
    state.stats.reset()
    state.limits.reset()
    # A reset server replays the same fault sequence as a freshly started one.
    state.sequence.clear()
    return web.json_response({"status": "reset", "config": state.config.model_dump(mode="json")})


async def _get_stats(request: web.Request) -> web.Response:
    raw = request.query.get("window_s")
    window_s = None
    if raw is not None:
        try:
            window_s = float(raw)
        except ValueError:
            window_s = math.nan
        if not (math.isfinite(window_s) and window_s > 0):
            return _invalid(f"`window_s` must be a positive number of seconds, got {raw!r}")
    return web.json_response(request.app[STATE].stats.snapshot(window_s=window_s))


async def _reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].stats.reset()
    return web.json_response({"status": "reset"})


def serve(
    config: SimConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    ready: Callable[[int], object] | None = None,
) -> None:
    """Serve ``config`` until SIGINT/SIGTERM; ``ready`` gets the bound port once listening."""
    asyncio.run(_serve(config, host=host, port=port, ready=ready))


async def _serve(
    config: SimConfig, *, host: str, port: int, ready: Callable[[int], object] | None
) -> None:
    runner = web.AppRunner(build_app(config), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        # A deep accept backlog lets hundreds of clients connect in the same instant.
        await web.TCPSite(runner, host, port, backlog=4096).start()
        stop = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
        if ready is not None:
            ready(int(runner.addresses[0][1]))
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``python -m chordal.simulator``."""
    parser = argparse.ArgumentParser(prog="python -m chordal.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--seed", type=int, help="overrides the config file's seed")
    parser.add_argument("--config", help="YAML or JSON file holding a SimConfig")
    parser.add_argument("--latency-scale", type=float, help="multiplies every latency")
    args = parser.parse_args(argv)
    config = SimConfig.from_file(args.config) if args.config else SimConfig()
    overrides = {"seed": args.seed, "latency_scale": args.latency_scale}
    config = SimConfig.model_validate(
        {**config.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    )

    def announce(port: int) -> None:
        print(f"chordal simulator listening on http://{args.host}:{port}", flush=True)

    serve(config, host=args.host, port=args.port, ready=announce)
