"""Load-test a private Chordal stack with Locust: ``python -m tests.load.run --duration 2m``.

Starts what ``chordal dev`` starts (a private Valkey, the provider simulator, the router and one
worker per tier) plus the gateway with a fresh API key, then runs ``tests/load/locustfile.py``
headless against both entry points and writes Locust's CSV and HTML reports. The stack is
private and offline, so a load run never touches a broker you use or spends real money. Exits
with Locust's code: non-zero when any request or job failed.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chordal.broker import free_port
from chordal.gateway.keys import new_key
from chordal.gateway.service import GatewayService
from chordal.stack import LocalStack
from workers.settings import Settings

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CSV_PREFIX = "chordal"
# Simulator latencies are the catalog's (0.7-12 s) times this: jobs keep their relative speeds
# but a short run still finishes many of them.
LATENCY_SCALE = 0.05
# The gateway limits each tenant to 20 submits a second by default; every load user shares one
# tenant, and the test measures Chordal, not the limiter.
RATE_LIMIT = "1000/second"
# Jobs running when the time is up may finish (and be counted) for this long.
STOP_TIMEOUT_S = 30


@dataclass(frozen=True)
class Row:
    """One line of Locust's ``<prefix>_stats.csv``; times in milliseconds."""

    type: str
    name: str
    requests: int
    failures: int
    median_ms: float
    p95_ms: float
    rps: float


@dataclass(frozen=True)
class Outcome:
    """What a load run left: Locust's exit code and where its reports are."""

    exit_code: int
    stats_csv: Path
    html: Path

    def rows(self) -> list[Row]:
        """The stats CSV's rows, the ``Aggregated`` one last."""
        return read_stats(self.stats_csv)


def read_stats(path: Path) -> list[Row]:
    """Parse Locust's stats CSV."""
    with path.open(newline="") as handle:
        return [
            Row(
                type=line["Type"],
                name=line["Name"],
                requests=int(line["Request Count"]),
                failures=int(line["Failure Count"]),
                median_ms=float(line["Median Response Time"]),
                # Locust writes "N/A" for a percentile of a name with no requests.
                p95_ms=float(line["95%"]) if line["95%"] != "N/A" else 0.0,
                rps=float(line["Requests/s"]),
            )
            for line in csv.DictReader(handle)
        ]


def summary(rows: Sequence[Row]) -> str:
    """One line: requests and failures in all, and per name."""
    total = next((row for row in rows if row.name == "Aggregated"), None)
    names = ", ".join(f"{row.name} {row.requests}/{row.failures}" for row in rows if row != total)
    if total is None:
        return "no requests"
    return f"{total.requests} requests, {total.failures} failures ({names}; requests/failures)"


def load_settings(data_dir: Path, latency_scale: float) -> Settings:
    """Settings for a private offline stack, over whatever ``CHORDAL_*`` the caller set."""
    return Settings().model_copy(
        update={
            "broker_url": None,
            "result_backend": None,
            "profile": "offline",
            "data_dir": data_dir,
            "sim_latency_scale": latency_scale,
            "gateway_rate_limit": RATE_LIMIT,
        }
    )


def locust_command(
    *, host: str, duration: str, users: int, spawn_rate: float, out: Path
) -> list[str]:
    """Locust, headless, writing ``out/chordal_*.csv`` and ``out/report.html``."""
    return [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless", "--only-summary",
        "-u", str(users), "-r", str(spawn_rate), "-t", duration,
        "--stop-timeout", str(STOP_TIMEOUT_S),
        "--host", host,
        "--csv", str(out / CSV_PREFIX),
        "--html", str(out / "report.html"),
    ]  # fmt: skip


def run(
    *,
    duration: str,
    users: int,
    spawn_rate: float,
    out: Path,
    latency_scale: float = LATENCY_SCALE,
    progress: bool = True,
) -> Outcome:
    """Start the stack and the gateway, run Locust against them, stop everything."""
    out = out.resolve()
    data_dir = out / "stack"
    # The embedded broker keeps an append-only file there: a previous run's jobs must not replay.
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)

    def say(message: str) -> None:
        if progress:
            print(message, flush=True)

    key = new_key()
    stack = LocalStack(load_settings(data_dir, latency_scale), progress=lambda m: say(f"… {m}"))
    with stack:
        gateway = GatewayService(
            env=stack.env(), port=free_port(), keys={key: "default"}, log_dir=data_dir / "logs"
        )
        with gateway:
            say(f"… stack up; gateway {gateway.url}; Locust for {duration}, {users} users")
            command = locust_command(
                host=gateway.url, duration=duration, users=users, spawn_rate=spawn_rate, out=out
            )
            env = {**stack.env(), "CHORDAL_LOAD_API_KEY": key}
            code = subprocess.run(command, env=env, check=False).returncode
    return Outcome(code, out / f"{CSV_PREFIX}_stats.csv", out / "report.html")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns Locust's exit code."""
    parser = argparse.ArgumentParser(prog="python -m tests.load.run", description=__doc__)
    parser.add_argument("--duration", default="2m", help="Locust's run time: 30s, 2m, 1h30m.")
    parser.add_argument("--users", type=int, default=20, help="Simulated users, both kinds.")
    parser.add_argument("--spawn-rate", type=float, default=5.0, help="Users started a second.")
    parser.add_argument("--out", type=Path, default=Path(".chordal/load"), help="Report folder.")
    parser.add_argument("--latency-scale", type=float, default=LATENCY_SCALE,
                        help="Simulator latency as a fraction of the catalog's.")  # fmt: skip
    args = parser.parse_args(argv)
    outcome = run(
        duration=args.duration, users=args.users, spawn_rate=args.spawn_rate,
        out=args.out, latency_scale=args.latency_scale,
    )  # fmt: skip
    print(f"reports: {outcome.html} and {outcome.stats_csv.parent}/{CSV_PREFIX}_*.csv")
    if outcome.stats_csv.exists():
        print(summary(outcome.rows()))
    print(f"locust exit code {outcome.exit_code}")
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
