"""Row c as a picture: calls per second against concurrency, one line per implementation."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.report import Row


def plot_throughput(rows: list[Row], path: Path, *, title: str) -> Path:
    """Write a PNG of calls/s against concurrency for every scenario in ``rows``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        series[row.scenario].append((row.concurrency, row.calls_per_s))
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for scenario, points in sorted(series.items()):
        points.sort()
        axes.plot([c for c, _ in points], [r for _, r in points], marker="o", label=scenario)
    axes.set_xlabel("concurrency (calls allowed in flight)")
    axes.set_ylabel("calls/s")
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if series:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "row c not run", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
