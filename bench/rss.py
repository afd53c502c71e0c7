"""Resident memory of a process, from ``/proc/<pid>/status`` (Linux; no psutil needed)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def status_kb(pid: int | str, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``RssAnon``, ...); ``Threads`` too."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def open_sockets(pid: int | str) -> int:
    """How many sockets the process holds open (Redis, broker and HTTP connections)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except OSError:  # closed between listing and reading
            continue
    return count


def sample(pid: int | str, *, count: int = 5, every_s: float = 0.1) -> dict[str, int]:
    """Median VmRSS and RssAnon (kB), thread count and open sockets over ``count`` readings."""
    readings: dict[str, list[int]] = {"VmRSS": [], "RssAnon": [], "Threads": [], "Sockets": []}
    for n in range(count):
        if n:
            time.sleep(every_s)
        for field, values in readings.items():
            values.append(open_sockets(pid) if field == "Sockets" else status_kb(pid, field))
    return {field: int(statistics.median(values)) for field, values in readings.items()}
