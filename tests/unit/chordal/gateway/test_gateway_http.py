"""The gateway's HTTP contract where no broker is needed: keys, the error shape, the body
limit, refusals before anything is enqueued, and a store that does not answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from chordal.broker import free_port
from chordal.gateway.app import create_app
from chordal.gateway.keys import digest
from chordal.gateway.state import Gateway
from workers.settings import Settings

KEY = "chd_unit-test-key"
JOB = {"agent": "summarizer", "input": "hello"}


@pytest.fixture
def http() -> Iterator[TestClient]:
    # Nothing listens there: whatever reaches Redis fails fast, as a stopped one does.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(broker_url=dead, gateway_keys={digest(KEY): "acme"},
                        gateway_max_body_bytes=4096, submit_timeout_s=1.0)  # fmt: skip
    gateway = Gateway.build(settings)
    with TestClient(create_app(gateway)) as client:
        yield client
    gateway.client.app.close()


def test_every_job_route_wants_a_key(http: TestClient) -> None:
    for method, path in (("post", "/v1/jobs"), ("get", "/v1/jobs/x"), ("delete", "/v1/jobs/x")):
        answer = http.request(method, path, json=JOB)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json() == {
            "error": "unauthorized", "field": None, "detail": "a valid API key is required"
        }  # fmt: skip


def test_a_body_over_the_limit_is_refused_before_it_is_read(http: TestClient) -> None:
    declared = http.post("/v1/jobs", json={**JOB, "input": "x" * 5000}, headers={"X-API-Key": KEY})

    def chunks() -> Iterator[bytes]:
        yield b'{"agent": "summarizer", "input": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    chunked = http.post("/v1/jobs", content=chunks(), headers={"X-API-Key": KEY})

    for answer in (declared, chunked):
        assert answer.status_code == 413
        assert answer.json()["error"] == "body_too_large"


def test_a_bad_job_is_refused_naming_its_field_before_any_store_is_asked(
    http: TestClient,
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    cases = [
        ({**JOB, "tenant": "other"}, "invalid_job", "tenant"),
        ({**JOB, "priority": 99}, "invalid_job", "priority"),
        ({"agent": "nobody", "input": "x"}, "unknown_agent", "agent"),
        ({**JOB, "idempotency_key": "a"}, "invalid_job", "idempotency_key"),
    ]
    for body, error, field in cases:
        answer = http.post("/v1/jobs", json=body, headers={**headers, "Idempotency-Key": "b"})
        assert answer.status_code == 422, body
        assert (answer.json()["error"], answer.json()["field"]) == (error, field)
    listed = http.post("/v1/jobs", json=["not", "an", "object"], headers=headers)
    assert listed.status_code == 422
    assert listed.json()["error"] == "invalid_request"


def test_a_store_that_does_not_answer_gives_503_with_retry_after(http: TestClient) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}

    submitted = http.post("/v1/jobs", json=JOB, headers=headers)
    read = http.get("/v1/jobs/some-id", headers=headers)
    ready = http.get("/readyz")

    for answer in (submitted, read):
        assert answer.status_code == 503
        assert answer.json()["error"] == "store_unavailable"
        assert answer.headers["Retry-After"] == "1"
        # Never the URL or the connection error's text.
        assert "127.0.0.1" not in answer.text
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "checks": {"broker": False, "results": False}}
    assert http.get("/healthz").status_code == 200
