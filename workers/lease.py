"""One running copy per task: an execution lease in Redis, renewed while the task runs.

A message can be delivered while another copy of it still runs: kombu gives a channel's
unacknowledged messages back when its connection drops (and the threads pool cannot stop the
running copy), the heartbeat restore gives back a worker that only looked dead, and a
redelivered router publishes its hand-off again. Each run of a task therefore first takes
the lease of its *link*: the task id, how many hand-offs led to it (``replaced_task_nesting``:
the router is 0, the agent task it handed the job to is 1, a re-route 2, ...) and its name.

The lease is one Redis key whose value says who runs it:

* absent: nobody ran it yet -- take it (``SET PX``) and run;
* a token: a copy runs now. Ours (the same run asking again): renew. Another's: **busy** --
  the caller defers this copy (requeues it with a short countdown) and never calls the model;
* ``done``: a copy finished (stored its result, joined its chord, or handed the job on):
  **done** -- the caller drops this copy.

A running copy's lease lasts ``ttl_s`` and the worker's heartbeat renews every lease it holds
(:meth:`Leases.renew`), so the lease of a worker that died lapses within ``ttl_s`` -- before
the heartbeat restore gives its messages back (``worker_dead_after_s`` > ``ttl_s``). ``done``
lasts as long as results do.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from enum import StrEnum

import redis

RUN_PREFIX = "chordal:run:"
DONE = "done"

_ACQUIRE = """
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return 'cancelled' end
local held = redis.call('GET', KEYS[1])
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'run'
end
if held == 'done' then return 'done' end
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'run'
end
return 'busy'
"""

_RENEW = """
local renewed = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    renewed = renewed + 1
  end
end
return renewed
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Verdict(StrEnum):
    """What a copy of a task should do."""

    RUN = "run"
    BUSY = "busy"
    DONE = "done"
    CANCELLED = "cancelled"


def run_key(task_id: str, name: str, nesting: int = 0) -> str:
    """The lease of one link of a task id's hand-off chain."""
    return f"{RUN_PREFIX}{task_id}:{nesting}:{name}"


class Leases:
    """This process's execution leases, kept in ``client``'s Redis (the result backend)."""

    def __init__(self, client: redis.Redis, *, ttl_s: float, done_ttl_s: int) -> None:
        self.client = client
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.done_ttl_s = done_ttl_s
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, key: str, token: str | None = None, *, unless: str | None = None) -> Verdict:
        """Take ``key``'s lease for a new run; BUSY if another copy holds it, DONE if one
        finished. Asking again with the same ``token`` (a retry whose reply was lost) is RUN.
        With ``unless`` (a key, such as the job's cancellation), CANCELLED and no lease if that
        key exists: the check and the lease are one round trip."""
        token = token or uuid.uuid4().hex
        keys = [key] if unless is None else [key, unless]
        raw = self._acquire(keys=keys, args=[token, self.ttl_ms])
        verdict = Verdict(raw.decode() if isinstance(raw, bytes) else str(raw))
        if verdict is Verdict.RUN:
            with self._lock:
                self._held[key] = token
        return verdict

    def renew(self) -> int:
        """Extend every lease this process holds (one round trip); returns how many it still
        held. A lease found taken over is dropped from this process's list."""
        with self._lock:
            held = list(self._held.items())
        if not held:
            return 0
        keys, tokens = [key for key, _ in held], [token for _, token in held]
        return int(self._renew(keys=keys, args=[self.ttl_ms, *tokens]))

    def finish(self, key: str, *, drop: Sequence[str] = ()) -> None:
        """Mark ``key``'s link done (later copies are dropped) and delete ``drop``, what only
        an unfinished link needed, in the same round trip."""
        # Forgotten first: if Redis refuses the write, the lease must still lapse, not be
        # renewed for ever by the heartbeat.
        self._forget(key)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, DONE, ex=self.done_ttl_s)
        if drop:
            pipe.delete(*drop)
        pipe.execute()

    def release(self, key: str) -> None:
        """Give the lease back without finishing (the message goes back to its queue)."""
        with self._lock:
            token = self._held.pop(key, None)
        if token is not None:
            self._release(keys=[key], args=[token])

    def held(self) -> list[str]:
        """The keys this process holds now."""
        with self._lock:
            return list(self._held)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)
