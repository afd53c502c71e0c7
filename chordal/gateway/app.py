"""The gateway's FastAPI application: jobs over HTTP (:mod:`chordal.gateway.jobs`), health,
readiness and metrics.

Endpoints are plain ``def`` functions: FastAPI runs them on its thread pool, where the producer
client's bounded, blocking calls belong (every one of them ends within ``submit_timeout_s``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chordal.gateway import jobs, stream
from chordal.gateway.bodylimit import BodyLimit
from chordal.gateway.problems import install
from chordal.gateway.state import Gateway

# How long a readiness probe waits for the broker and the result store.
READY_TIMEOUT_S = 2.0


def create_app(gateway: Gateway) -> FastAPI:
    """The application over ``gateway``."""
    app = FastAPI(
        title="Chordal gateway",
        version="1",
        description="Submit, watch and cancel Chordal jobs. Errors: "
        '{"error": code, "field": name or null, "detail": text}.',
    )
    app.state.gateway = gateway
    install(app)
    app.add_middleware(BodyLimit, max_bytes=gateway.settings.gateway_max_body_bytes)
    app.middleware("http")(_counted(gateway))
    app.include_router(jobs.router)
    app.include_router(stream.router)

    @app.get("/healthz", summary="The process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The broker and the result store answer")
    def readyz() -> JSONResponse:
        checks = {"broker": _broker_ready(gateway), "results": _results_ready(gateway)}
        ok = all(checks.values())
        body = {"status": "ready" if ok else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(gateway.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _broker_ready(gateway: Gateway) -> bool:
    try:
        with gateway.client.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=READY_TIMEOUT_S)
            client = getattr(conn.default_channel, "client", None)
            if client is not None:  # Redis: a channel connects lazily
                client.ping()
    except Exception:  # any failure means not ready; the probe says no more
        return False
    return True


def _results_ready(gateway: Gateway) -> bool:
    try:
        return bool(gateway.owners.client.ping())
    except (redis.RedisError, OSError):
        return False


Next = Callable[[Request], Awaitable[Response]]


def _counted(gateway: Gateway) -> Callable[[Request, Next], Awaitable[Response]]:
    async def count(request: Request, call_next: Next) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        gateway.requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    return count
