"""Drills: faults done to a real stack, each printing what it measured (tests/drills/support.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.drills.support import REPORTED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every drill's counts, and keep them as JSON where CHORDAL_DRILL_REPORT says."""
    if not REPORTED:
        return
    terminalreporter.section("drills")
    for counts in REPORTED:
        terminalreporter.write_line(counts.line())
    target = os.environ.get("CHORDAL_DRILL_REPORT")
    if target:
        Path(target).write_text(json.dumps([c.as_dict() for c in REPORTED], indent=2))
