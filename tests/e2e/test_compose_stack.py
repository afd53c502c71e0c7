"""End to end: the image built from the Dockerfile, the stack of compose.yaml, jobs through it.

Every process is the real one in its own container: Valkey with a generated password, the
simulator standing in for providers, the router and the three tier workers, the gateway, the
exporter, Flower and Prometheus. Nothing here reaches into a container but through its
published port, the engine's own commands, or ``compose run``.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.parse
from typing import Any

from tests.e2e.stack import (
    SUMMARY,
    WORKERS,
    ComposeStack,
    get_json,
    http_status,
    post_json,
    run,
    wait_until,
)

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}
# Enough jobs on the fast tier that the killed worker holds some of them when it dies.
LOAD = 60


def auth(stack: ComposeStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.api_key}"}


def submit(stack: ComposeStack, body: dict[str, Any]) -> str:
    """Submit as a client should: on 429 (the tenant's rate limit), wait ``Retry-After``."""
    while True:
        try:
            answer = post_json(f"{stack.gateway}/v1/jobs", body, headers=auth(stack))
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
            continue
        return str(answer["id"])


def status(stack: ComposeStack, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = get_json(f"{stack.gateway}/v1/jobs/{job_id}", headers=auth(stack))
    return found


def wait_done(stack: ComposeStack, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not (found := status(stack, job_id))["done"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {found['state']} after {timeout_s:.0f} s")
        time.sleep(0.5)
    return found


def test_every_service_passes_the_images_healthcheck(compose_stack: ComposeStack) -> None:
    # The workers' check passes once they have warmed up (their /metrics starts then).
    roles = ("simulator", "gateway", "exporter", "flower", *WORKERS)
    verdicts: dict[str, tuple[bool, str]] = {}

    def all_healthy() -> bool:
        verdicts.update({role: compose_stack.healthy(role) for role in roles})
        return all(ok for ok, _ in verdicts.values())

    try:
        wait_until(all_healthy, 120, "every service healthy")
    finally:
        SUMMARY["healthy"] = sum(ok for ok, _ in verdicts.values())
    assert all(ok for ok, _ in verdicts.values()), verdicts


def test_a_plain_job_through_the_gateway(compose_stack: ComposeStack) -> None:
    job_id = submit(compose_stack, {"agent": "summarizer", "input": "Why do workers ack late?"})

    found = wait_done(compose_stack, job_id)

    assert found["state"] == "SUCCESS", found
    assert found["result"]["output"]
    assert found["cost_usd"] > 0
    assert found["model"]
    assert found["tier"] in {"fast", "balanced", "premium"}


def test_a_team_job_through_the_gateway(compose_stack: ComposeStack) -> None:
    job_id = submit(compose_stack, {"team": "research", "input": "Why do workers ack late?"})

    found = wait_done(compose_stack, job_id, timeout_s=180)

    assert found["state"] == "SUCCESS", found
    assert len(found["members"]) >= 2
    assert {member["state"] for member in found["members"]} == {"SUCCESS"}


def printed_json(out: str) -> dict[str, Any]:
    """The JSON document ``chordal submit --wait --json`` printed last, after its progress
    lines (compose run gives it a terminal, hence the colours)."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    start = text.rfind("\n{") + 1
    found: dict[str, Any] = json.loads(text[start:])
    return found


def test_a_plain_job_through_compose_run(compose_stack: ComposeStack) -> None:
    # What compose.yaml's header tells a user to type, in a one-off container of the image.
    out = compose_stack.compose(
        "run", "--rm", "--no-deps", "router", "submit", "summarizer", "Why ack late?",
        "--wait", "--json", timeout=300,
    )  # fmt: skip

    result = printed_json(out)
    assert result["status"] == "succeeded", result
    assert result["cost_usd"] > 0


def test_a_team_job_through_compose_run(compose_stack: ComposeStack) -> None:
    out = compose_stack.compose(
        "run", "--rm", "--no-deps", "router", "submit", "--team", "research", "Why ack late?",
        "--wait", "--json", timeout=300,
    )  # fmt: skip

    result = printed_json(out)
    assert result["succeeded"] >= 2, result
    assert result["failed"] == 0, result


def test_a_killed_tier_worker_loses_no_job(compose_stack: ComposeStack) -> None:
    engine = compose_stack.engine.name
    jobs = [
        submit(compose_stack, {"agent": "summarizer", "input": f"job {n}", "tier": "fast"})
        for n in range(LOAD)
    ]
    # When the fast worker holds some of them (running or prefetched)
    wait_until(
        lambda: any(status(compose_stack, job)["state"] != "PENDING" for job in jobs),
        60,
        "a fast job started",
    )
    (victim,) = compose_stack.containers("fast")
    run([engine, "kill", "--signal", "KILL", victim])
    killed_at = time.monotonic()
    # Then (with the worker back, as its restart policy would bring it) every job ends
    compose_stack.compose("up", "-d", "--no-deps", "fast")
    # One deadline for all: a job still not ended then is lost, and counted (not raised on).
    finals = {job: "PENDING" for job in jobs}
    deadline = killed_at + 240
    while time.monotonic() < deadline:
        for job in [job for job, state in finals.items() if state not in TERMINAL]:
            finals[job] = status(compose_stack, job)["state"]
        if all(state in TERMINAL for state in finals.values()):
            break
        time.sleep(1)
    SUMMARY["killed_worker_jobs"] = LOAD
    SUMMARY["lost"] = sum(1 for state in finals.values() if state not in TERMINAL)
    SUMMARY["after_kill_s"] = round(time.monotonic() - killed_at)

    assert set(finals.values()) == {"SUCCESS"}, finals


def prometheus_query(stack: ComposeStack, query: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{stack.ports['prometheus']}/api/v1/query?"
    answer = get_json(url + urllib.parse.urlencode({"query": query}))
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_scraped_the_workers_and_the_exporter(compose_stack: ComposeStack) -> None:
    # After the jobs above, within a scrape interval or two (15 s)
    queries = {
        "jobs": "sum by (pool) (chordal_jobs_total)",
        "depth": 'chordal_queue_depth{queue="tier.fast"}',
        "gateway": "chordal_gateway_requests_total",
    }
    found: dict[str, list[dict[str, Any]]] = {}

    def pools() -> set[str]:
        return {series["metric"].get("pool", "") for series in found.get("jobs", [])}

    def scraped() -> bool:
        found.update({name: prometheus_query(compose_stack, q) for name, q in queries.items()})
        # The fast worker restarted after its kill: its new process must have been found (DNS,
        # every 15 s) and scraped with the jobs it ran since.
        return all(found.values()) and "fast" in pools()

    try:
        wait_until(scraped, 120, "Prometheus has the series")
    finally:
        SUMMARY["scraped_pools"] = ",".join(sorted(pool for pool in pools() if pool))

    assert "fast" in pools(), found["jobs"]
    assert found["depth"][0]["value"][1] is not None
    assert found["gateway"], found


def test_flower_lists_every_worker(compose_stack: ComposeStack) -> None:
    url = f"http://127.0.0.1:{compose_stack.ports['flower']}/api/workers?refresh=1"
    token = f"chordal:{compose_stack.flower_password}"
    headers = {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}
    names: list[str] = []

    def listed() -> bool:
        names[:] = list(get_json(url, headers=headers))
        return all(any(name.startswith(f"{role}") for name in names) for role in WORKERS)

    wait_until(listed, 60, "Flower lists router, fast, balanced and premium")
    SUMMARY["flower_workers"] = len(names)


def test_bench_runs_from_the_image(compose_stack: ComposeStack) -> None:
    # Row a (Celery's own round trip against its floor), at smoke size, in a one-off container.
    out = compose_stack.compose(
        "run", "--rm", "--no-deps", "router", "bench", "--smoke", "--only", "a", timeout=300
    )

    assert "## a." in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out), out[-2000:]


def test_a_broker_outage_leaves_the_probes_alive(compose_stack: ComposeStack) -> None:
    # Last: it stops Valkey. The exporter's and gateway's liveness never ask the broker, so the
    # kubelet (or Docker) keeps them while ChordalBrokerDown fires; the gateway's readiness
    # takes it out of the load balancer meanwhile.
    compose_stack.compose("stop", "valkey")

    wait_until(
        lambda: http_status(f"{compose_stack.gateway}/readyz") == 503, 60, "gateway not ready"
    )
    for role in ("exporter", "gateway"):
        ok, line = compose_stack.healthy(role)
        assert ok, (role, line)
    assert http_status(f"{compose_stack.gateway}/healthz") == 200
