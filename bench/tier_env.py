"""One Chordal fast-tier worker fed agent tasks straight on its queue, without a router.

The same set-up as ``bench.concurrency``'s ``chordal-tier-worker`` scenario, on a
:class:`bench.concurrency.Bench` (its simulator and broker): rows e (cold start) and g (memory)
start their worker here, where nothing else consumes ``tier.fast``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from bench.celery_load import Batch
from bench.concurrency import Bench
from bench.procs import Child, child_env


@dataclass
class TierEnv:
    """A started :class:`Bench`, the Celery app that talks to it, and the agent task batch."""

    bench: Bench
    app: Celery = field(init=False)
    batch: Batch = field(init=False)
    worker_env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        from agents.job import Job
        from agents.run import Runtime, plan
        from workers.app import create_app
        from workers.settings import Settings
        from workers.tiers import AGENT_TASK, Tier, transport_priority

        broker_url = self.bench.broker_url
        sim_v1 = f"{self.bench.admin.root}/v1"
        settings = Settings(
            broker_url=broker_url, result_backend=None, profile="offline",
            simulator_url=sim_v1, data_dir=self.bench.workdir / "chordal",
        )  # fmt: skip
        # Routed once here, as the router would: the router is not what these rows measure.
        job = Job(agent="summarizer", input="Benchmark input.", tier=Tier.FAST)
        decision = plan(job, Runtime.load(settings)).model_dump(mode="json")
        job_dict = job.model_dump(mode="json")
        self.batch = Batch(
            task=AGENT_TASK,
            queue=Tier.FAST.queue,
            args=lambda n: [{**job_dict, "input": f"Benchmark input {n}."}, decision],
            kwargs={"failed": []},
            priority=transport_priority(job.priority, broker_url=broker_url),
        )
        self.worker_env = child_env(
            CHORDAL_BROKER_URL=broker_url, CHORDAL_SIMULATOR_URL=sim_v1,
            CHORDAL_PROFILE="offline", CHORDAL_DATA_DIR=str(settings.data_dir),
            CHORDAL_LOG_LEVEL="WARNING",
        )  # fmt: skip
        self.app = create_app(settings)

    def spawn_worker(self, name: str, *, concurrency: int) -> Child:
        """Start ``chordal worker --tier fast`` (it loads in the background)."""
        command = ["-m", "chordal.cli", "worker", "--tier", "fast", "--processes", "1"]
        command += ["--concurrency", str(concurrency), "--loglevel", "WARNING"]
        return self.bench.children.spawn(name, command, self.worker_env)

    def send(self, n: int, **options: Any) -> Any:
        """Publish agent task ``n`` on the fast tier's queue; returns its AsyncResult."""
        batch = self.batch
        return self.app.send_task(
            batch.task, args=batch.args(n), kwargs=batch.kwargs, queue=batch.queue,
            priority=batch.priority, **options,
        )  # fmt: skip

    def close(self) -> None:
        """Close the app's connections (the Bench stops the processes)."""
        self.app.close()
