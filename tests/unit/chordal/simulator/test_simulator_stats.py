"""The simulator's counters and the sliding-window arrival maxima."""

from __future__ import annotations

import pytest

from chordal.simulator.stats import ARRIVALS_KEPT, Stats, max_in_window


@pytest.mark.parametrize(
    ("times", "window_s", "expected"),
    [
        ([], 1.0, 0),
        ([5.0], 1.0, 1),
        ([0.0, 0.1, 0.2, 0.3, 0.4], 10.0, 5),
        ([0.0, 0.1, 0.6, 0.7, 1.2], 0.5, 2),
        ([0.0, 0.1, 0.6, 0.7, 1.2], 1.0, 4),
        # A window ending at t holds (t - window_s, t]: 0.0 and 1.0 never share one.
        ([0.0, 1.0, 2.0], 1.0, 1),
        ([0.0, 1.0, 1.0, 1.0], 1.0, 3),
    ],
)
def test_max_in_window(times: list[float], window_s: float, expected: int) -> None:
    assert max_in_window(times, window_s) == expected


def _stats_with(arrivals: list[tuple[float, bool]]) -> Stats:
    stats = Stats()
    for at, admitted in arrivals:
        stats.begin("m", None, at=at, admitted=admitted)
        stats.end("m")
    return stats


def test_snapshot_reports_window_maxima_only_when_asked() -> None:
    stats = _stats_with([(0.0, True), (0.1, False), (0.2, True), (5.0, True)])

    plain = stats.snapshot()["models"]["m"]
    windowed = stats.snapshot(window_s=1.0)

    assert "max_in_window" not in plain
    assert windowed["window_s"] == 1.0
    assert windowed["models"]["m"]["max_in_window"] == 3
    assert windowed["models"]["m"]["max_accepted_in_window"] == 2


def test_arrival_history_is_bounded_and_cleared_by_reset() -> None:
    stats = _stats_with([(n * 0.001, True) for n in range(ARRIVALS_KEPT + 10)])

    assert len(stats.arrivals["m"]) == ARRIVALS_KEPT
    assert stats.arrivals["m"][0] == pytest.approx(0.01)
    stats.reset()
    assert stats.snapshot(window_s=1.0)["models"] == {}
