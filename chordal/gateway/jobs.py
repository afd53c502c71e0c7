"""``/v1/jobs``: submit, read and cancel jobs, each tenant only its own."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Body, Depends, Header, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from chordal.gateway.problems import Problem, from_chordal, retry_after
from chordal.gateway.state import Gateway
from workers.errors import ChordalError

JOB_EXAMPLE = {"agent": "summarizer", "input": "Celery acknowledges a task after it ran."}

router = APIRouter(prefix="/v1")
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="Or X-API-Key: <key>")


def current(request: Request) -> Gateway:
    """The gateway the application serves."""
    gateway: Gateway = request.app.state.gateway
    return gateway


Current = Annotated[Gateway, Depends(current)]


def tenant_of(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> str:
    """The tenant the request's API key names; 401 without a known key."""
    key = bearer.credentials if bearer is not None else api_key
    tenant = None if key is None else current(request).keys.tenant(key)
    if tenant is None:
        raise Problem(401, "unauthorized", "a valid API key is required",
                      headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return tenant


Tenant = Annotated[str, Depends(tenant_of)]


@router.post("/jobs", status_code=202, summary="Submit a job")
def submit(
    tenant: Tenant,
    gateway: Current,
    response: Response,
    job: Annotated[dict[str, Any], Body(examples=[JOB_EXAMPLE])],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Validate and enqueue a job (its fields as in ``chordal submit``, without
    ``tenant``: that comes from the API key). Answers 202 with its id and status URL."""
    if "tenant" in job:
        raise Problem(422, "invalid_job", "the tenant comes from the API key; remove it",
                      field="tenant")  # fmt: skip
    body_key = job.get("idempotency_key")
    if idempotency_key is not None and body_key not in (None, idempotency_key):
        raise Problem(422, "invalid_job", "Idempotency-Key and idempotency_key differ",
                      field="idempotency_key")  # fmt: skip
    wanted = {**job, "tenant": tenant}
    if idempotency_key is not None:
        wanted["idempotency_key"] = idempotency_key
    new_id = str(uuid.uuid4())
    try:
        parsed = gateway.client.validate(wanted)
        # A refused job costs nothing of the tenant's rate.
        _check_rate(gateway, tenant)
        gateway.owners.record(new_id, tenant)
        job_id = gateway.client.submit(parsed, job_id=new_id)
    except (ChordalError, redis.RedisError, OSError) as exc:
        raise from_chordal(exc) from None
    url = f"/v1/jobs/{job_id}"
    response.headers["Location"] = url
    return {"id": job_id, "state": "PENDING", "status_url": url}


@router.get("/jobs/{job_id}", summary="A job's state, result and cost")
def status(tenant: Tenant, gateway: Current, job_id: str) -> dict[str, Any]:
    """State, model and tier once routed, the result and its cost once done, and a team's
    members."""
    own(gateway, job_id, tenant)
    try:
        found = gateway.client.status(job_id)
        members = gateway.client.tree(job_id)
    except (ChordalError, redis.RedisError, OSError) as exc:
        raise from_chordal(exc) from None
    result = found.result
    error = None if found.error is None else {"type": found.error_type, "detail": found.error}
    return {
        "id": job_id, "state": found.state, "done": found.done, "model": found.model,
        "tier": found.tier, "cost_usd": None if result is None else result.get("cost_usd"),
        "result": result, "error": error, "members": members,
    }  # fmt: skip


@router.delete("/jobs/{job_id}", status_code=202, summary="Cancel a job")
def cancel(tenant: Tenant, gateway: Current, job_id: str) -> dict[str, Any]:
    """Cancel the job and everything it started; 409 if it already ended."""
    own(gateway, job_id, tenant)
    try:
        found = gateway.client.status(job_id)
        if found.done:
            raise Problem(409, "job_finished", f"job {job_id} already ended {found.state}")
        gateway.client.cancel(job_id)
    except (ChordalError, redis.RedisError, OSError) as exc:
        raise from_chordal(exc) from None
    return {"id": job_id, "state": "REVOKED"}


def _check_rate(gateway: Gateway, tenant: str) -> None:
    try:
        if gateway.limiter.hit(gateway.rate, "gateway-submit", tenant):
            return
        reset = gateway.limiter.get_window_stats(gateway.rate, "gateway-submit", tenant)[0]
    except (redis.RedisError, OSError) as exc:
        raise from_chordal(exc) from None
    raise Problem(429, "rate_limited", f"over {gateway.settings.gateway_rate_limit} submits",
                  headers=retry_after(reset - time.time()))  # fmt: skip


def own(gateway: Gateway, job_id: str, tenant: str) -> None:
    """404 unless ``tenant`` submitted ``job_id``."""
    try:
        owned = gateway.owners.owns(job_id, tenant)
    except (redis.RedisError, OSError) as exc:
        raise from_chordal(exc) from None
    if not owned:
        # Another tenant's job and no job at all answer alike.
        raise Problem(404, "not_found", f"no job {job_id}")
