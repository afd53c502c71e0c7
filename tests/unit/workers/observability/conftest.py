"""What the tracing tests share."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from workers.observability import tracing


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without OTEL_* variables and ends with tracing shut down."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield
    tracing.shutdown_tracing()
