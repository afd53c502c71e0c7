"""Answers kept by attempt, so a copy of a task never calls the model again for an attempt
that already got its answer.

An *attempt* is one link of a task id's hand-off chain (``<task id>:<nesting>``, see
:mod:`workers.lease`), and a cascade's critic call inside it adds ``:critic``. The moment an
answer arrives, the worker writes it here -- the completion, its parsed output, and the
admission it was charged against -- before it records the call in the fleet's books or stores
the result. If the worker dies after that write, the copy that runs next finds the answer,
records the call (the fleet's bookkeeping is idempotent per admission, so a call already
recorded is not charged twice) and returns the same result without a provider call.

An answer lives until its link finishes (:func:`agents.base._end_lease` deletes it) or, at
most, for the visibility timeout: no copy of the message can arrive later than that.

**Calls in flight.** Each worker process also lists the calls it has admitted and not yet
finished in ``chordal:calls:<worker>``. When a worker dies (:mod:`workers.recovery` finds its
beat lapsed), the live worker that gives its messages back first charges each of its
unfinished calls at its reserved worst case, marked ``uncertain`` (:func:`charge_lost_calls`):
the provider may have billed a request whose answer died with the worker. A call whose answer
was kept is left to the copy that runs next, which charges what it really cost.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from routing.budgets import Reservation
from routing.fleet import Admission, Fleet
from routing.limits import Grant
from routing.llm import Completion
from workers.errors import Cancelled
from workers.observability.redaction import redact
from workers.tls import redis_ssl

ANSWER_PREFIX = "chordal:answer:"
# The cascade's critic call is a second call within one attempt (agents.cascade).
CRITIC_CALL = "critic"


def answer_key(attempt: str) -> str:
    """Where the answer of ``attempt`` is kept."""
    return f"{ANSWER_PREFIX}{attempt}"


@dataclass(frozen=True)
class Answer:
    """A call's answer as it arrived, with what it was charged against."""

    completion: Completion
    admission: Admission


async def remember(
    client: redis.asyncio.Redis,
    attempt: str,
    answer: Answer,
    *,
    ttl_s: float,
    worker: str | None = None,
    redacted: bool = False,
) -> None:
    """Keep ``answer`` for ``attempt``; the kept answer then stands for the call ``worker``
    listed in flight. One round trip, made on the event loop the moment the answer is read: a
    worker killed after that leaves the answer to the next copy, and the sooner it is kept, the
    narrower the window in which a kill makes the provider answer twice.

    ``redacted`` (``store_redacted``) keeps the answer's text redacted: a copy that returns it
    returns what the result would have stored anyway. A structured answer whose schema insists
    on the redacted values (an e-mail ``format``, a ``pattern``) then fails its check in that
    copy and the job tries another model."""
    completion = answer.completion
    if redacted:
        completion = dataclasses.replace(completion, content=redact(completion.content))
    data = {
        "completion": dataclasses.asdict(completion),
        "admission": dataclasses.asdict(answer.admission),
    }
    pipe = client.pipeline(transaction=False)
    pipe.set(answer_key(attempt), json.dumps(data), ex=max(1, int(ttl_s)))
    if worker is not None:
        pipe.hdel(calls_key(worker), answer.admission.id)
    await pipe.execute()


def loop_client(url: str) -> redis.asyncio.Redis:
    """This process's client of ``url`` for the shared event loop (one per process: a
    ``redis.asyncio`` client belongs to the loop it first ran on, and there is one loop)."""
    client = _loop_clients.get(url)
    if client is None:
        client = _loop_clients[url] = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            **redis_ssl(url),
        )
    return client


_loop_clients: dict[str, redis.asyncio.Redis] = {}
# Like the fleet's: a Redis that does not answer fails the step quickly, the retry waits.
SOCKET_TIMEOUT_S = 5.0


def recall(client: redis.Redis, attempt: str) -> Answer | None:
    """The answer ``attempt`` got, if an earlier copy got one."""
    raw = client.get(answer_key(attempt))
    if raw is None:
        return None
    data = json.loads(raw)
    return Answer(
        completion=Completion(**data["completion"]), admission=_admission(data["admission"])
    )


CALLS_PREFIX = "chordal:calls:"


def calls_key(worker: str) -> str:
    """The calls ``worker`` has admitted and not finished (admission id -> call)."""
    return f"{CALLS_PREFIX}{worker}"


def admitted(
    client: redis.Redis, worker: str, attempt: str, admission: Admission, *, ttl_s: float
) -> None:
    """List ``admission`` as a call ``worker`` is making for ``attempt``."""
    entry = json.dumps({"attempt": attempt, "admission": dataclasses.asdict(admission)})
    pipe = client.pipeline(transaction=False)
    pipe.hset(calls_key(worker), admission.id, entry)
    pipe.expire(calls_key(worker), max(1, int(ttl_s)))
    pipe.execute()


def finished(client: redis.Redis, worker: str, admission: Admission) -> None:
    """``worker``'s call ended without an answer, and is recorded: no longer in flight."""
    client.hdel(calls_key(worker), admission.id)


def lost_calls(client: redis.Redis, worker: str) -> list[tuple[str, Admission]]:
    """The calls a dead ``worker`` left unfinished: (attempt, admission)."""
    found = []
    for raw in client.hvals(calls_key(worker)):
        data = json.loads(raw)
        found.append((str(data["attempt"]), _admission(data["admission"])))
    return found


def charge_lost_calls(client: redis.Redis, fleet: Fleet, worker: str) -> int:
    """Charge a dead worker's unfinished calls at their worst case (``uncertain``), unless an
    answer was kept for them; returns how many were charged. Safe to run twice: the fleet
    charges a call once."""
    charged = 0
    for attempt, admission in lost_calls(client, worker):
        if recall(client, attempt) is not None:
            continue  # the next copy returns the kept answer and charges what it cost
        fleet.uncertain(admission, Cancelled(f"worker {worker} died mid-call"), latency_s=0.0)
        charged += 1
    client.delete(calls_key(worker))
    return charged


def _admission(data: dict[str, Any]) -> Admission:
    fields = dict(data)
    fields["reservation"] = Reservation(**fields["reservation"])
    grant = fields.get("grant")
    fields["grant"] = Grant(**grant) if grant is not None else None
    return Admission(**fields)
