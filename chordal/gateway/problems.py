"""The gateway's one error shape: ``{"error": code, "field": name or null, "detail": text}``.

``error`` is a stable snake_case code a program can branch on; ``field`` names the part of the
request to fix, when one is at fault; ``detail`` is for people. Every error the gateway sends,
FastAPI's own validation and routing errors included, has this shape.
"""

from __future__ import annotations

import math
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from workers.errors import (
    BrokerUnavailable,
    IdempotencyConflict,
    InvalidJob,
    NoEligibleModel,
    UnknownAgent,
)

HEADERS = {"last-event-id": "Last-Event-ID", "idempotency-key": "Idempotency-Key"}
# Seconds a client should wait before trying a store that did not answer.
STORE_RETRY_AFTER_S = 1


class Problem(Exception):
    """An error answered as ``status`` with the gateway's error shape."""

    def __init__(
        self, status: int, error: str, detail: str, *, field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.field = field
        self.headers = headers or {}


def problem_body(error: str, detail: str, field: str | None = None) -> dict[str, Any]:
    """The error shape's JSON."""
    return {"error": error, "field": field, "detail": detail}


def respond(problem: Problem) -> JSONResponse:
    """``problem`` as an HTTP response."""
    return JSONResponse(
        problem_body(problem.error, problem.detail, problem.field),
        status_code=problem.status,
        headers=problem.headers,
    )


def retry_after(seconds: float | None) -> dict[str, str]:
    """A ``Retry-After`` header of whole seconds (at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds or 1)))}


def from_chordal(exc: Exception) -> Problem:
    """The Problem a submit, status or cancel error answers as."""
    if isinstance(exc, IdempotencyConflict):
        return Problem(409, "idempotency_conflict", str(exc), field="Idempotency-Key")
    if isinstance(exc, UnknownAgent):
        return Problem(422, "unknown_agent", str(exc), field=exc.field)
    if isinstance(exc, NoEligibleModel):
        return Problem(422, "no_eligible_model", str(exc), field=exc.field)
    if isinstance(exc, InvalidJob):
        return Problem(422, "invalid_job", str(exc), field=exc.field)
    if isinstance(exc, BrokerUnavailable):
        return Problem(503, "broker_unavailable", str(exc), headers=retry_after(exc.retry_after))
    if isinstance(exc, redis.RedisError | OSError):
        # Never the exception's text: a connection error may quote the URL.
        return Problem(503, "store_unavailable", "the result store did not answer; try again",
                       headers=retry_after(STORE_RETRY_AFTER_S))  # fmt: skip
    raise exc


def install(app: FastAPI) -> None:
    """Answer every error, FastAPI's own included, in the one shape."""

    async def on_problem(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return respond(exc)

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        detail = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":
            return respond(Problem(422, "invalid_json", f"the body is not JSON: {detail}"))
        loc = [str(part) for part in first.get("loc", ())]
        field: str | None
        if loc[:1] == ["header"]:
            # FastAPI names a header in lower case; the error names it as the client wrote it.
            field = HEADERS.get(loc[-1], loc[-1].title())
        else:
            field = ".".join(part for part in loc if part != "body") or None
        return respond(Problem(422, "invalid_request", detail, field=field))

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        error = codes.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers or {})
        return respond(Problem(exc.status_code, error, str(exc.detail), headers=headers))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
