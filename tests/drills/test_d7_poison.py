"""D7: poison messages published straight to the queues, past the client's checks.

Each kind -- a body that is not JSON, the wrong number of arguments, a job missing its input,
an unknown task, a 2 MiB input, a pickled body -- must end on the dead-letter list with a
reason, leave every worker alive, and not stop the next job. Replayed unchanged, a record is
dead-lettered again under a new id. A good job refused by a bound that was then raised runs
when replayed.

The stack starts with ``max_input_bytes`` of 4 KiB (so a good 6 KiB job can be refused for
real); the bound is then raised to the default 1 MiB by restarting the router and the fast
worker, as an operator would. Not covered here: a message that kills every worker that takes
it (the delivery count's drill).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult
from kombu import Exchange, Producer

from agents.client import Client
from chordal.lifecycle import stop_group
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import ChildProcess, LocalStack
from tests.drills.support import assert_ledger_matches, measure
from tests.support import stack_settings
from workers.deadletter import find_dead_letter, read_dead_letters, replay_dead_letter
from workers.tiers import AGENT_TASK, ROUTE_TASK, ROUTER_QUEUE, Tier

pytestmark = [pytest.mark.integration, pytest.mark.drill]

STRICT_INPUT_BYTES = 4096
DEFAULT_INPUT_BYTES = 1_048_576
FAST = Tier.FAST.queue


def _raw(client: Client, queue: str, body: bytes, **properties: Any) -> None:
    # Straight onto the queue, as a foreign or broken producer would put it.
    with client.app.connection_for_write() as connection:
        producer = Producer(connection.channel(), exchange=Exchange(queue, type="direct"))
        producer.publish(body, routing_key=queue, serializer=None, declare=[], **properties)


def not_json(client: Client) -> str:
    marker = f"not-json-{uuid.uuid4()}"
    _raw(client, FAST, f"{{{marker}".encode(), content_type="application/json",
         content_encoding="utf-8", headers={"task": AGENT_TASK, "id": marker})  # fmt: skip
    return marker


def wrong_argument_count(client: Client) -> str:
    return str(client.app.send_task(AGENT_TASK, args=[1, 2, 3, 4], queue=FAST).id)


def job_missing_input(client: Client) -> str:
    sent = client.app.send_task(ROUTE_TASK, args=[{"agent": "summarizer"}], queue=ROUTER_QUEUE)
    return str(sent.id)


def unknown_task(client: Client) -> str:
    task_id = str(uuid.uuid4())
    _raw(client, FAST, json.dumps([[{"agent": "summarizer", "input": "x"}], {}, {}]),
         content_type="application/json", content_encoding="utf-8",
         headers={"task": "chordal.no_such_task", "id": task_id, "lang": "py"})  # fmt: skip
    return task_id


def oversize_input(client: Client) -> str:
    job = {"agent": "summarizer", "input": "x" * (2 * DEFAULT_INPUT_BYTES), "tier": "fast"}
    return str(client.app.send_task(ROUTE_TASK, args=[job], queue=ROUTER_QUEUE).id)


def pickled(client: Client) -> str:
    marker = f"pickled-{uuid.uuid4()}"
    _raw(client, FAST, marker.encode(), content_type="application/x-python-serialize",
         content_encoding="binary", headers={"task": AGENT_TASK, "id": marker})  # fmt: skip
    return marker


@dataclass(frozen=True)
class Poison:
    kind: str
    publish: Callable[[Client], str]  # returns what its record holds: a marker or task id
    reason: str  # what the record's reason must say


POISONS = [
    Poison("not_json", not_json, "cannot decode"),
    Poison("wrong_args", wrong_argument_count, "malformed message for chordal.agent"),
    Poison("missing_input", job_missing_input, "input: Field required"),
    Poison("unknown_task", unknown_task, "unknown task"),
    Poison("oversize", oversize_input, f"input is over {STRICT_INPUT_BYTES} bytes"),
    Poison("pickle", pickled, "application/x-python-serialize"),
]


def dead_letter_holding(
    client: Client, needle: str, *, besides: str | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """The record holding ``needle`` (other than the one called ``besides``), once written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in read_dead_letters(client.app, limit=50):
            if record["id"] != besides and needle in json.dumps(record):
                return record
        time.sleep(0.2)
    raise AssertionError(f"no dead letter holding {needle} within {timeout} s")


def next_job(client: Client, text: str) -> tuple[str, str]:
    """Submit an ordinary job pinned to fast; its id and final state."""
    job_id = client.submit({"agent": "summarizer", "input": text, "tier": "fast"})
    try:
        client.wait(job_id, timeout=60)
    except Exception as exc:
        return job_id, f"failed: {exc}"
    return job_id, AsyncResult(job_id, app=client.app).state


def raise_input_bound(stack: LocalStack) -> None:
    """Restart the router and the fast worker with the default input bound."""
    stack.settings = stack.settings.model_copy(update={"max_input_bytes": DEFAULT_INPUT_BYTES})
    old = [child for child in stack.children if child.name == "router" or
           child.name.startswith("fast")]  # fmt: skip
    for child in old:
        stop_group(child.process, timeout_s=20)
        stack.children.remove(child)
    stack.add_worker(Tier.FAST)
    log = Path(stack.settings.data_dir) / "logs" / "router-raised.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chordal.cli", "worker", "--router", "--processes", "1"],
            stdout=out,
            stderr=subprocess.STDOUT, env=stack.env(), start_new_session=True,
        )  # fmt: skip
    # Owned by the stack from here: its stop() ends it, and check_alive() watches it.
    stack.children.append(ChildProcess("router", process, log))
    stack.wait_until_consuming()


def _cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chordal.cli", *args], env=stack.env(), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.timeout(420)
def test_d7_poison_messages_are_kept_and_the_fleet_keeps_serving(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path, max_input_bytes=STRICT_INPUT_BYTES)
    with LocalStack(settings, tiers=[Tier.FAST]) as stack:
        client = Client(settings=stack.settings)
        simulator = SimulatorAdmin(stack.settings.simulator_url)
        try:
            started = time.monotonic()
            job_ids: list[str] = []
            records: dict[str, dict[str, Any]] = {}
            outcome: dict[str, str] = {}
            reasons_ok: dict[str, bool] = {}

            # Given each poison, straight onto its queue
            for poison in POISONS:
                sent_at = time.monotonic()
                needle = poison.publish(client)
                # Then it is dead-lettered with its reason, every worker lives, and the next
                # ordinary job succeeds
                record = dead_letter_holding(client, needle)
                kept_s = time.monotonic() - sent_at
                stack.check_alive()
                job_id, state = next_job(client, f"After the {poison.kind} message: summarize.")
                job_ids.append(job_id)
                records[poison.kind] = record
                reasons_ok[poison.kind] = poison.reason in record["reason"]
                outcome[poison.kind] = f"dead-lettered({kept_s:.1f}s)+alive+next:{state}"
            dead_letters = len(read_dead_letters(client.app, limit=100))

            # Given a good 6 KiB job refused by the 4 KiB bound
            good = {"agent": "summarizer", "input": "A long but fine text. " * 280, "tier": "fast"}
            refused = client.app.send_task(ROUTE_TASK, args=[good], queue=ROUTER_QUEUE)
            good_record = dead_letter_holding(client, str(refused.id))

            # When the bound is raised (router and fast worker restarted)
            raise_input_bound(stack)

            # When records are replayed unchanged: one by the CLI (a raw body), the others by
            # the function (a pickle, and tasks kept by their arguments, which run as new tasks)
            # Then each is dead-lettered again under a new id (the 2 MiB job is over the
            # default bound too), and its old record is gone
            again: dict[str, str] = {}
            expected = {poison.kind: poison.reason for poison in POISONS}
            expected["oversize"] = f"input is over {DEFAULT_INPUT_BYTES} bytes"
            first = records["not_json"]
            replayed = _cli(stack, "dead-letters", "replay", first["id"])
            assert replayed.returncode == 0, replayed.stderr
            repeat = dead_letter_holding(client, first["task_id"], besides=first["id"])
            again["not_json"] = repeat["reason"]
            for kind in ("pickle", "missing_input", "oversize"):
                replay = replay_dead_letter(client.app, records[kind]["id"])
                needle = replay.task_id or records[kind]["task_id"]
                repeat = dead_letter_holding(client, needle, besides=records[kind]["id"])
                again[kind] = repeat["reason"]
            gone = [k for k in again if find_dead_letter(client.app, records[k]["id"]) is None]
            repeated = {k: "again" if expected[k] in reason else reason for k, reason in
                        again.items()}  # fmt: skip

            # And the good job, replayed, now runs to success under its new id
            good_replay = replay_dead_letter(client.app, good_record["id"])
            assert good_replay.task_id is not None
            job_ids.append(good_replay.task_id)
            job_id, after_state = next_job(client, "After the replays: summarize this.")
            job_ids.append(job_id)
            stack.check_alive()

            counts = measure("D7 poison", client, simulator, job_ids, started=started,
                             timeout=90)  # fmt: skip
            counts.extra.update(outcome)
            counts.extra.update(
                dead_letters=dead_letters,
                replayed_unchanged="/".join(f"{k}:{v}" for k, v in repeated.items()),
                good_replay=AsyncResult(good_replay.task_id, app=client.app).state,
                left_out="kills-its-worker (delivery count)",
            )
        finally:
            client.app.close()

    assert all(reasons_ok.values()), {k: records[k]["reason"] for k, ok in reasons_ok.items()
                                      if not ok}  # fmt: skip
    assert all(value.endswith("next:SUCCESS") for value in outcome.values()), outcome
    assert dead_letters == len(POISONS)
    assert set(repeated.values()) == {"again"}, repeated
    assert gone == list(again)
    assert after_state == "SUCCESS"
    assert counts.lost == 0
    assert counts.states == {"SUCCESS": len(job_ids)}
    assert f"input is over {STRICT_INPUT_BYTES} bytes" in good_record["reason"]
    assert counts.extra["good_replay"] == "SUCCESS"
    assert counts.duplicate_calls == 0
    assert_ledger_matches(counts)
