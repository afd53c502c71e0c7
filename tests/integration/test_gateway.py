"""The HTTP gateway against a running stack: `chordal gateway` as its own process, over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.client import Client
from chordal.broker import free_port
from chordal.gateway.keys import new_key
from chordal.gateway.service import GatewayService
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.support import LATENCY_SCALE

pytestmark = pytest.mark.integration

ACME, BETA, BURST = new_key(), new_key(), new_key()
RATE = 10
JOB = {"agent": "summarizer", "input": "Why does a task queue acknowledge late?"}


LOGS: dict[str, Path] = {}
PII = ("ada.lovelace@example.com", "+44 20 7946 0958", "4111 1111 1111 1111")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def gateway(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**stack.env(), "CHORDAL_GATEWAY_RATE_LIMIT": f"{RATE}/second"}
    keys = {ACME: "acme", BETA: "beta", BURST: "burst"}
    logs = LOGS["gateway"] = tmp_path_factory.mktemp("gateway")
    with GatewayService(env=env, port=free_port(), keys=keys, log_dir=logs) as running:
        yield running.url
    text = (logs / "gateway.log").read_text()
    # No key, in full or in part, in any line the gateway logged.
    for key in keys:
        assert key not in text
        assert key[4:20] not in text


@pytest.fixture
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=10.0) as client:
        yield client


def wait_done(http: httpx.Client, job_id: str, key: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
        if body["done"]:
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not done after {timeout} s")


def test_a_job_submitted_over_http_runs_and_reports_its_result_and_cost(
    http: httpx.Client,
) -> None:
    answer = http.post("/v1/jobs", json=JOB, headers=auth(ACME))

    assert answer.status_code == 202
    job_id = answer.json()["id"]
    assert answer.headers["Location"] == f"/v1/jobs/{job_id}" == answer.json()["status_url"]
    done = wait_done(http, job_id, ACME)
    assert done["state"] == "SUCCESS"
    assert done["result"]["output"]
    assert done["model"]
    assert done["tier"]
    assert done["cost_usd"] == done["result"]["cost_usd"] > 0
    # The tenant came from the key, and so the spend is acme's.
    assert done["result"]["tenant"] == "acme"


def test_a_team_job_lists_its_members(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"team": "research", "input": "Late acks?"},
                       headers=auth(ACME)).json()["id"]  # fmt: skip

    done = wait_done(http, job_id, ACME)

    assert done["state"] == "SUCCESS"
    agents = {member["agent"] for member in done["members"]}
    assert {"researcher", "analyst", "critic"} <= agents


def read_events(
    http: httpx.Client, job_id: str, key: str, *, last: str | None = None
) -> list[dict[str, Any]]:
    """The job's Server-Sent Events to the end of the stream: id, event and data of each."""
    headers = {**auth(key), **({"Last-Event-ID": last} if last else {})}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=60) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = json.loads(value) if name == "data" else value
    return events


def test_events_arrive_in_order_to_the_end_and_resume_after_an_id(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json=JOB, headers=auth(ACME)).json()["id"]

    events = read_events(http, job_id, ACME)

    states = [e["data"]["state"] for e in events if e["event"] == "state"]
    assert states == ["ROUTED", "SUCCESS"]
    assert events[-1]["data"]["cost_usd"] > 0
    assert events[-1]["data"]["model"] == events[0]["data"]["model"]
    ids = [tuple(int(part) for part in e["id"].split("-")) for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # Reconnecting after the first event gives what followed it, and the same end.
    resumed = read_events(http, job_id, ACME, last=events[0]["id"])
    assert resumed == events[1:]
    # A finished job's stream is its end at once.
    assert read_events(http, job_id, ACME, last=events[-1]["id"]) == []


def test_a_teams_events_tag_each_member(http: httpx.Client, stack: LocalStack) -> None:
    job_id = http.post("/v1/jobs", json={"team": "research", "input": "Late acks?"},
                       headers=auth(ACME)).json()["id"]  # fmt: skip

    events = read_events(http, job_id, ACME)

    members = [e["data"] for e in events if e["event"] == "member"]
    ended = {m["agent"] for m in members if m["state"] == "SUCCESS"}
    assert {"researcher", "analyst", "critic"} <= ended
    assert all(m["member"] != job_id for m in members)
    assert events[-1]["event"] == "state"
    assert events[-1]["data"]["state"] == "SUCCESS"
    # The Python client reads the same stream.
    client = Client(settings=stack.settings)
    try:
        assert [(e.id, e.kind, e.data) for e in client.stream(job_id)] == [
            (e["id"], e["event"], e["data"]) for e in events
        ]
    finally:
        client.app.close()


def test_a_streamed_job_sends_its_answer_as_tokens_before_it_ends(
    http: httpx.Client, simulator: SimulatorAdmin
) -> None:
    # Calls of a second: the answer streams over 0.7 s, many times the sink's 50 ms batches.
    simulator.fault("*", latency_median_s=1.0 / LATENCY_SCALE, latency_sigma=0.0)
    job_id = http.post("/v1/jobs", json={**JOB, "stream": True}, headers=auth(ACME)).json()["id"]

    events = read_events(http, job_id, ACME)

    tokens = [e["data"]["text"] for e in events if e["event"] == "token"]
    assert len(tokens) > 1, "the answer came as one piece"
    kinds = [e["event"] for e in events]
    assert kinds.index("token") > kinds.index("state")  # after ROUTED
    assert kinds[-1] == "state"  # and all before the end
    result = http.get(f"/v1/jobs/{job_id}", headers=auth(ACME)).json()["result"]
    assert "".join(tokens) == result["output"]


def test_a_streamed_teams_tokens_are_tagged_with_their_member(http: httpx.Client) -> None:
    team = {"team": "research", "input": "Late acks?", "stream": True}
    job_id = http.post("/v1/jobs", json=team, headers=auth(ACME)).json()["id"]

    events = read_events(http, job_id, ACME)

    tokens = [e["data"] for e in events if e["event"] == "token"]
    result = http.get(f"/v1/jobs/{job_id}", headers=auth(ACME)).json()["result"]
    by_member: dict[str, str] = {}
    for token in tokens:
        if "member" in token:
            by_member[token["member"]] = by_member.get(token["member"], "") + token["text"]
    outputs = {m["job_id"]: m["output"] for m in result["members"] if "output" in m}
    assert outputs
    assert {m: by_member.get(m) for m in outputs} == outputs
    # The aggregator is a member too: its tokens are tagged with it.
    aggregator = result["aggregator"]
    assert by_member[aggregator["job_id"]] == aggregator["output"]
    assert all("member" in token for token in tokens)


def test_another_tenants_events_answer_404(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json=JOB, headers=auth(ACME)).json()["id"]

    answer = http.get(f"/v1/jobs/{job_id}/events", headers=auth(BETA))
    bad_id = http.get(f"/v1/jobs/{job_id}/events", headers={**auth(ACME), "Last-Event-ID": "x"})

    assert answer.status_code == 404
    assert bad_id.status_code == 422
    assert bad_id.json()["field"] == "Last-Event-ID"


def test_a_tenant_neither_sees_nor_cancels_another_tenants_job(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json=JOB, headers=auth(ACME)).json()["id"]

    seen = http.get(f"/v1/jobs/{job_id}", headers=auth(BETA))
    cancelled = http.delete(f"/v1/jobs/{job_id}", headers=auth(BETA))
    unknown = http.get("/v1/jobs/no-such-job", headers=auth(BETA))

    assert seen.status_code == cancelled.status_code == unknown.status_code == 404
    # Another tenant's job and no job at all answer alike.
    assert seen.json()["error"] == unknown.json()["error"] == "not_found"
    assert wait_done(http, job_id, ACME)["state"] == "SUCCESS"


def test_a_payload_cannot_choose_its_tenant(http: httpx.Client) -> None:
    answer = http.post("/v1/jobs", json={**JOB, "tenant": "beta"}, headers=auth(ACME))

    assert answer.status_code == 422
    assert answer.json() == {
        "error": "invalid_job", "field": "tenant",
        "detail": "the tenant comes from the API key; remove it",
    }  # fmt: skip


def test_no_key_or_an_unknown_key_answers_401(http: httpx.Client) -> None:
    for headers in ({}, auth("chd_not-a-key"), {"X-API-Key": "chd_not-a-key"}):
        answer = http.post("/v1/jobs", json=JOB, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"] == "unauthorized"
    assert http.get("/v1/jobs/x", headers={"X-API-Key": BETA}).status_code == 404


def test_cancel_revokes_a_running_job_and_refuses_a_finished_one(http: httpx.Client) -> None:
    slow = {**JOB, "tier": "premium", "max_latency_s": 600}
    job_id = http.post("/v1/jobs", json=slow, headers=auth(ACME)).json()["id"]

    answer = http.delete(f"/v1/jobs/{job_id}", headers=auth(ACME))

    assert answer.status_code == 202
    assert wait_done(http, job_id, ACME)["state"] == "REVOKED"
    assert read_events(http, job_id, ACME)[-1]["data"] == {"state": "REVOKED"}
    again = http.delete(f"/v1/jobs/{job_id}", headers=auth(ACME))
    assert again.status_code == 409
    assert again.json()["error"] == "job_finished"


def test_an_idempotency_key_returns_the_first_job_and_refuses_another_body(
    http: httpx.Client,
) -> None:
    headers = {**auth(ACME), "Idempotency-Key": f"order-{time.time_ns()}"}

    first = http.post("/v1/jobs", json=JOB, headers=headers)
    repeat = http.post("/v1/jobs", json=JOB, headers=headers)
    other = http.post("/v1/jobs", json={**JOB, "input": "something else"}, headers=headers)

    assert first.status_code == repeat.status_code == 202
    assert first.json()["id"] == repeat.json()["id"]
    assert other.status_code == 409
    assert other.json()["error"] == "idempotency_conflict"
    # The same key is another tenant's own.
    theirs = http.post("/v1/jobs", json=JOB, headers={**headers, **auth(BETA)})
    assert theirs.status_code == 202
    assert theirs.json()["id"] != first.json()["id"]


def test_a_tenant_over_its_rate_gets_429_with_retry_after(http: httpx.Client) -> None:
    answers = [http.post("/v1/jobs", json=JOB, headers=auth(BURST)) for _ in range(RATE + 5)]

    limited = [a for a in answers if a.status_code == 429]
    assert limited, "no submit was limited"
    assert all(a.status_code in (202, 429) for a in answers)
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].json()["error"] == "rate_limited"
    # Another tenant is not limited by this one's burst.
    assert http.post("/v1/jobs", json=JOB, headers=auth(BETA)).status_code == 202


def test_a_body_over_the_limit_answers_413(http: httpx.Client) -> None:
    big = {**JOB, "input": "x" * (3 * 1024 * 1024)}

    answer = http.post("/v1/jobs", json=big, headers=auth(ACME))

    assert answer.status_code == 413
    assert answer.json()["error"] == "body_too_large"


def test_invalid_input_names_the_field(http: httpx.Client) -> None:
    cases = [
        ({"agent": "nobody", "input": "x"}, "unknown_agent", "agent"),
        ({"agent": "summarizer", "input": "x", "priority": 12}, "invalid_job", "priority"),
        ({"agent": "summarizer"}, "invalid_job", "input"),
    ]
    for body, error, field in cases:
        answer = http.post("/v1/jobs", json=body, headers=auth(ACME))
        assert answer.status_code == 422, body
        assert (answer.json()["error"], answer.json()["field"]) == (error, field)
    not_json = http.post("/v1/jobs", content=b"{nope", headers={**auth(ACME),
                         "Content-Type": "application/json"})  # fmt: skip
    assert not_json.status_code == 422
    assert not_json.json()["error"] == "invalid_json"


def test_health_readiness_metrics_and_openapi(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": True, "results": True}
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/healthz", "/readyz", "/metrics"} <= set(paths)
    http.get("/v1/jobs/x", headers=auth(ACME))
    metrics = http.get("/metrics").text
    counted = 'chordal_gateway_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}'
    assert counted in metrics


def test_a_gateway_whose_broker_is_down_answers_503(tmp_path: Path, stack: LocalStack) -> None:
    dead = f"redis://:secret-{ACME[4:12]}@127.0.0.1:{free_port()}/0"
    env = {**stack.env(), "CHORDAL_BROKER_URL": dead, "CHORDAL_RESULT_BACKEND": dead,
           "CHORDAL_SUBMIT_TIMEOUT_S": "2"}  # fmt: skip
    key = new_key()
    with GatewayService(env=env, port=free_port(), keys={key: "acme"}, log_dir=tmp_path) as gw:
        started = time.monotonic()
        answer = httpx.post(f"{gw.url}/v1/jobs", json=JOB, headers=auth(key), timeout=30.0)
        took = time.monotonic() - started
        ready = httpx.get(f"{gw.url}/readyz", timeout=30.0)

    assert answer.status_code == 503
    assert answer.json()["error"] in ("broker_unavailable", "store_unavailable")
    assert int(answer.headers["Retry-After"]) >= 1
    assert took < 10.0, "the refusal must come within the submit bound"
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    logged = (tmp_path / "gateway.log").read_text()
    assert dead not in logged
    assert f"secret-{ACME[4:12]}" not in logged


def test_the_gateway_refuses_to_start_without_keys(stack: LocalStack) -> None:
    env = {**stack.env(), "CHORDAL_GATEWAY_KEYS": "{}"}

    run = subprocess.run(
        [sys.executable, "-m", "chordal.cli", "gateway", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert run.returncode == 78
    assert "no API keys" in run.stderr


def test_no_key_password_or_planted_pii_reaches_any_log(
    http: httpx.Client, stack: LocalStack
) -> None:
    # Given: jobs carrying personal data, in the input and the metadata, one of them streamed,
    # one refused, and a request with a wrong key
    planted = f"Mail {PII[0]}, call {PII[1]}, card {PII[2]}."
    done = [
        http.post("/v1/jobs", json={**JOB, "input": planted, "metadata": {"who": PII[0]}},
                  headers=auth(ACME)).json()["id"],
        http.post("/v1/jobs", json={**JOB, "input": planted, "stream": True},
                  headers=auth(ACME)).json()["id"],
    ]  # fmt: skip
    http.post("/v1/jobs", json={"agent": "nobody", "input": planted}, headers=auth(ACME))
    http.post("/v1/jobs", json=JOB, headers=auth(f"chd_{PII[0]}"))
    for job_id in done:
        wait_done(http, job_id, ACME)

    # Then: no log line of the gateway or of any worker holds them, a key or the password
    assert stack.broker is not None
    secrets = [*PII, ACME, BETA, BURST, stack.broker.password]
    logs = [LOGS["gateway"] / "gateway.log", *(stack.settings.data_dir / "logs").glob("*.log")]
    assert len(logs) > 4
    for log in logs:
        text = log.read_text(errors="replace")
        leaked = [secret for secret in secrets if secret in text]
        assert leaked == [], f"{log.name} holds {leaked}"
