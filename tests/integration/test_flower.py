"""Flower as a user opens it: headless Chromium logs in and reads the dashboard.

Flower learns about workers and tasks only from events, so these tests also prove that workers
send task events and that task arguments reach the dashboard redacted (argsrepr).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from chordal.broker import free_port
from chordal.flower import Flower, make_password
from chordal.stack import LocalStack

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: install Debian's chromium package"
    ),
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
USER = "chordal"
PII = {
    "email": "jane.doe@example.com",
    "phone": "+1 415 555 0100",
    "card": "4111 1111 1111 1111",
}
PII_JOB = {
    "agent": "writer",
    "input": f"Mail {PII['email']} or call {PII['phone']} about card {PII['card']}",
}
# Flower's own wait budget: heartbeats come every 2 s, the tables refresh every 1 s.
SEEN_TIMEOUT_S = 20.0
SEEN_TIMEOUT_MS = SEEN_TIMEOUT_S * 1000


def worker_names(stack: LocalStack) -> list[str]:
    """The Celery node name of each live router and tier worker (``fast-<pid>@<host>``)."""
    roles = {"router", *(tier.value for tier in stack.tiers)}
    names = []
    for child in stack.children:
        role = child.name.split("-")[0]
        if role in roles and child.process.poll() is None:
            names.append(f"{role}-{child.process.pid}@{socket.gethostname()}")
    return names


def get_json(flower: Flower, path: str) -> Any:
    """GET ``path`` from Flower with its credentials, decoded."""
    token = base64.b64encode(f"{flower.user}:{flower.password}".encode()).decode()
    request = urllib.request.Request(
        f"{flower.url}{path}", headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=5.0) as response:
        return json.load(response)


def wait_for(what: str, check: Callable[[], bool], timeout: float = SEEN_TIMEOUT_S) -> None:
    """Poll ``check`` until true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"Flower did not show {what} within {timeout} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def flower(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    """Flower on a free port, watching the session stack, once it lists every worker online."""
    dashboard = Flower(
        env=stack.env(), port=free_port(), user=USER, password=make_password(),
        log_dir=tmp_path_factory.mktemp("flower"),
    )  # fmt: skip
    with dashboard:
        expected = set(worker_names(stack))

        def all_online() -> bool:
            rows = get_json(dashboard, "/workers?json=1")["data"]
            return expected <= {row["hostname"] for row in rows if row["status"]}

        # Seeing workers also proves Flower's event receiver listens, so no task event is missed.
        wait_for(f"workers {sorted(expected)}", all_online)
        yield dashboard
    print(f"\nFlower log: {dashboard.log}")


@pytest.fixture
def pii_job(flower: Flower, submit_and_wait: Callable[..., dict[str, Any]]) -> str:
    """The id of a finished job whose input holds an e-mail, a phone and a card number."""
    # Submitted only once Flower listens (the flower fixture waited for worker heartbeats).
    job_id = str(submit_and_wait(**PII_JOB)["job_id"])

    def succeeded() -> bool:
        try:
            return bool(get_json(flower, f"/api/task/info/{job_id}")["state"] == "SUCCESS")
        except urllib.error.HTTPError:
            return False

    wait_for(f"task {job_id} as SUCCESS", succeeded)
    return job_id


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (Playwright never downloads a browser here)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, flower: Flower) -> Iterator[Page]:
    """A browser tab logged in to Flower with its basic-auth credentials."""
    context = browser.new_context(
        http_credentials={"username": flower.user, "password": flower.password},
        viewport={"width": 1400, "height": 900},
    )
    context.set_default_timeout(SEEN_TIMEOUT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``tests/artifacts`` when writable (CI keeps it), else a temp folder."""
    if os.access(ARTIFACTS.parent, os.W_OK):
        ARTIFACTS.mkdir(exist_ok=True)
        return ARTIFACTS
    return tmp_path_factory.mktemp("artifacts")


@pytest.mark.parametrize("path", ["/", "/workers", "/tasks", "/api/workers"])
def test_dashboard_answers_401_without_credentials(
    browser: Browser, flower: Flower, path: str
) -> None:
    # Given a client without Flower's password (a headless browser would wait on the login
    # prompt forever, so this asks through the browser context's request API)
    context = browser.new_context()
    try:
        # When it asks for a dashboard page or the API
        response = context.request.get(f"{flower.url}{path}", max_redirects=0)
        # Then Flower answers 401
        assert response.status == 401
    finally:
        context.close()


def test_dashboard_refuses_a_wrong_password(browser: Browser, flower: Flower) -> None:
    # Given a browser that logs in with a wrong password
    context = browser.new_context(http_credentials={"username": USER, "password": "wrong"})
    try:
        page = context.new_page()
        # When it opens the Workers page
        response = page.goto(f"{flower.url}/workers")
        # Then Flower answers 401 and shows no dashboard
        assert response is not None
        assert response.status == 401
        expect(page.locator("#workers-table")).to_have_count(0)
    finally:
        context.close()


def test_workers_page_shows_every_tier_worker_online(
    page: Page, flower: Flower, stack: LocalStack, artifacts: Path
) -> None:
    # Given the stack's router and tier workers
    names = worker_names(stack)
    assert {name.split("-")[0] for name in names} == {"router", *(t.value for t in stack.tiers)}

    # When the user opens the Workers page
    page.goto(f"{flower.url}/workers")

    # Then each worker has a row with an Online badge
    rows = page.locator("#workers-table tbody tr")
    for name in names:
        # Flower links each worker's name, labelled "Worker <name>" for screen readers.
        row = rows.filter(has=page.get_by_role("link", name=f"Worker {name}", exact=True))
        expect(row.locator("td:nth-child(2) .badge")).to_have_text(
            "Online", timeout=SEEN_TIMEOUT_MS
        )
    expect(page.locator("#workers-online")).to_have_text(str(len(names)))
    shot = artifacts / "flower-workers.png"
    page.screenshot(path=shot, full_page=True)
    print(f"\nscreenshot: {shot}")


def test_task_page_shows_the_finished_job_with_redacted_arguments(
    page: Page, flower: Flower, pii_job: str, artifacts: Path
) -> None:
    # Given a finished job whose input held PII
    # When the user finds it on the Tasks page
    page.goto(f"{flower.url}/tasks")
    row = page.locator("#tasks-table tbody tr", has=page.locator(f'a[href$="/task/{pii_job}"]'))
    expect(row.locator(".badge")).to_have_text("SUCCESS", timeout=SEEN_TIMEOUT_MS)

    # And opens its detail page
    row.locator(f'a[href$="/task/{pii_job}"]').click()
    page.wait_for_url(f"**/task/{pii_job}")
    shot = artifacts / "flower-task.png"
    page.screenshot(path=shot, full_page=True)
    print(f"\nscreenshot: {shot}")

    # Then it shows SUCCESS and arguments without the e-mail, phone or card number
    status = page.locator(".detail-row", has=page.locator('dt:text-is("Status")'))
    expect(status.locator(".badge")).to_have_text("SUCCESS")
    shown = {
        label: page.locator(".detail-row", has=page.locator(f'dt:text-is("{label}")'))
        .locator("code")
        .inner_text()
        for label in ("Arguments", "Keyword arguments")
    }
    print(f"\nFlower shows: {json.dumps(shown, indent=2)}")
    for label, text in shown.items():
        leaked = [kind for kind, raw in PII.items() if raw in text]
        assert not leaked, f"{label} show the raw {leaked}: {text}"
    assert "[EMAIL]" in shown["Arguments"], shown["Arguments"]
