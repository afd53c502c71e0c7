"""``make e2e``: one composed stack for the whole module, torn down even when a test fails, and
one summary line at the end."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from tests.e2e.stack import ROOT, SUMMARY, ComposeStack


@pytest.fixture(scope="session")
def compose_stack() -> Iterator[ComposeStack]:
    log_dir = ROOT / ".chordal" / "e2e"
    shutil.rmtree(log_dir, ignore_errors=True)  # this run's logs only
    stack = ComposeStack(log_dir=log_dir)
    SUMMARY["engine"] = stack.engine.name
    started = time.monotonic()
    try:
        stack.build()
        stack.up()
        SUMMARY.update({key: round(value) for key, value in stack.timings.items()})
        yield stack
    finally:
        stack.down()
        SUMMARY["total_s"] = round(time.monotonic() - started)
        SUMMARY["logs"] = str(stack.log_dir.relative_to(ROOT))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    passed = len(terminalreporter.stats.get("passed", []))
    failed = len(terminalreporter.stats.get("failed", [])) + len(
        terminalreporter.stats.get("error", [])
    )
    facts = " ".join(f"{key}={value}" for key, value in SUMMARY.items())
    verdict = "PASSED" if exitstatus == 0 else "FAILED"
    terminalreporter.write_line(f"e2e {verdict}: passed={passed} failed={failed} {facts}")
