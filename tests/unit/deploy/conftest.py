"""The rendered overlays, one per test: the ``docs`` fixture."""

from __future__ import annotations

import pytest

from tests.unit.deploy.rendered import OVERLAYS, Doc, render


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> tuple[Doc, ...]:
    """One overlay's objects."""
    return render(request.param)
