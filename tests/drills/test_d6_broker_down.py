"""D6: the broker is down when a producer submits.

A real stack (private Valkey, simulator, router and fast worker processes) whose broker is
SIGKILLed, keeping its data. Must show: a submit, with an idempotency key or without, raises
BrokerUnavailable within ``submit_timeout_s`` (plus a little slack) whether the broker was
killed under a client that had used it or its port refuses a fresh client; no idempotency claim
is left; once the broker is back on the same port (from its append-only file) the same client
submits again, the job completes, a repeat of the keyed submit returns the same id, another job
under the key raises IdempotencyConflict, and no refused submit left a job that runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from agents.claims import claim_key
from agents.client import Client
from chordal.broker import EmbeddedBroker, free_port
from chordal.simulator.admin import SimulatorAdmin
from chordal.stack import LocalStack
from tests.drills.support import answered_calls, measure
from tests.support import stack_settings
from workers.errors import BrokerUnavailable, IdempotencyConflict
from workers.tiers import Tier

pytestmark = [pytest.mark.integration, pytest.mark.drill]

BOUND_S = 3.0  # the drill's submit_timeout_s
SLACK_S = 0.5  # what a loaded 2-core machine may add to a measured bound
KEY = "d6-order-1"
# Long enough for the router and the fast worker to reconnect after the broker comes back.
RECOVERY_S = 180.0


def job(text: str, **fields: Any) -> dict[str, Any]:
    """A one-call job on the fast tier (the only tier this stack runs)."""
    return {"agent": "summarizer", "input": text, "tier": "fast", **fields}


def refusal_seconds(submit: Callable[[], str]) -> float:
    """Seconds ``submit`` took to raise BrokerUnavailable (fails the drill if it did not)."""
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        submit()
    return round(time.monotonic() - started, 3)


@pytest.mark.timeout(600)
def test_d6_a_submit_while_the_broker_is_down(tmp_path: Path) -> None:
    started = time.monotonic()
    with LocalStack(stack_settings(tmp_path, submit_timeout_s=BOUND_S), tiers=[Tier.FAST]) as stack:
        broker = stack.broker
        assert isinstance(broker, EmbeddedBroker)
        client = Client(settings=stack.settings)
        simulator = SimulatorAdmin(stack.settings.simulator_url)
        refused_port = f"redis://127.0.0.1:{free_port()}/0"
        stranger = Client(settings=stack.settings.model_copy(
            update={"broker_url": refused_port, "result_backend": refused_port}))  # fmt: skip
        try:
            # Given a stack that has served a job through this client (its connections are
            # warm), written to the append-only file (fsync every second) before the crash
            first = client.submit(job("D6: before the crash."))
            client.wait(first, timeout=60)
            time.sleep(1.5)
            broker.kill()

            # When jobs are submitted to the dead broker, and to a port that refuses
            refused = {
                "killed_plain_s": refusal_seconds(lambda: client.submit(job("D6: plain."))),
                "killed_keyed_s": refusal_seconds(
                    lambda: client.submit(job("D6: keyed.", idempotency_key=KEY))),
                "port_plain_s": refusal_seconds(lambda: stranger.submit(job("D6: plain."))),
                "port_keyed_s": refusal_seconds(
                    lambda: stranger.submit(job("D6: keyed.", idempotency_key=KEY))),
            }  # fmt: skip

            # Then, the broker back from its append-only file: no claim was left behind
            broker.start()
            store = redis.Redis.from_url(broker.url)
            claims_left = len(store.keys("chordal:idempotency:*"))
            store.close()

            # And the same client submits again: the keyed job once, the plain one too
            keyed = client.submit(job("D6: keyed.", idempotency_key=KEY))
            repeat = client.submit(job("D6: keyed.", idempotency_key=KEY))
            with pytest.raises(IdempotencyConflict) as conflict:
                client.submit(job("D6: another job.", idempotency_key=KEY))
            plain = client.submit(job("D6: plain."))
            counts = measure("D6 broker down at submit", client, simulator,
                             [first, keyed, plain], started=started,
                             timeout=RECOVERY_S)  # fmt: skip
            store = redis.Redis.from_url(broker.url)
            claim = store.hgetall(claim_key("default", KEY))
            store.close()
            calls, _, _ = answered_calls(simulator)
            counts.extra.update(refused, bound_s=BOUND_S, claims_left=claims_left, calls=calls)
        finally:
            stranger.app.close()
            client.app.close()

    # Every refusal came within the bound and left nothing behind
    for what, seconds in refused.items():
        assert seconds <= BOUND_S + SLACK_S, f"{what}: {seconds} s"
    assert claims_left == 0
    # The resubmitted jobs ran once each, and nothing a refused submit sent ever ran
    assert counts.lost == 0
    assert counts.states == {"SUCCESS": 3}
    assert repeat == keyed
    assert conflict.value.field == "idempotency_key"
    assert claim[b"job_id"].decode() == keyed
    assert claim[b"state"] == b"published"
    assert calls == 3
    assert counts.duplicate_calls == 0
