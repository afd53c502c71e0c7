"""Commands of several routing components sent to Redis together, in one round trip.

Around each LLM call a worker thread updates the breaker, the latency board, the rate limits,
the budgets and the cost ledger: one after another, that is up to six round trips it waits on.
A :class:`Batch` queues them on one non-transactional pipeline and sends them at once. The
commands touch different keys and each script or command is atomic on its own, so nothing
needs ``MULTI`` around them. The components queue their commands with ``queue_*`` methods
beside their usual ones; a ``queue_*`` method whose result the caller needs returns a function
that gives it once the batch has run.

Scripts go as ``EVALSHA`` of the digest redis-py computed when the script was registered:
``Script.__call__(client=pipeline)`` would make every ``execute`` send ``SCRIPT EXISTS`` first,
a second round trip per call. A server that does not hold a script (restarted, or ``SCRIPT
FLUSH``) answers ``NOSCRIPT`` without running it, so :meth:`Batch.execute` loads those
scripts and runs only those commands again, all in one more round trip (after a Redis restart
every worker's first batch takes that path). A command that ran is never sent twice by a batch.

A batch is sent once: redis-py's pipeline forgets its commands when it executes, even when that
fails. :func:`send` builds a new batch for every attempt, retrying a connection error or a
timeout with :func:`workers.redis_retry.retry_redis`. What a lost attempt applied is then sent
again, so whatever a retried batch charges must be idempotent: the budgets' release, the
ledger's record and the limits' reconcile are (each module says how).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, KeyT

from workers.redis_retry import retry_redis

__all__ = ["Batch", "OnError", "send"]

OnError = Callable[[Exception], None]


class Batch:
    """Commands queued on one pipeline, sent in one round trip by :meth:`execute`.

    ::

        batch = Batch(client)
        breakers.queue_record(batch, "gpt-4o", ok=True, latency_s=1.2)
        reserved = budgets.queue_reserve(batch, tenant="acme", job_id=job_id, ...)
        batch.execute()
        reservation = reserved()  # raises BudgetExceeded as budgets.reserve would
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._pipe = client.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Script, Sequence[KeyT], Sequence[EncodableT]]] = {}
        self._advisory: list[tuple[range, OnError]] = []
        self._results: list[Any] | None = None

    @property
    def pipe(self) -> Pipeline:
        """The pipeline, for plain commands; :meth:`execute` raises their errors."""
        return self._pipe

    def script(self, script: Script, keys: Sequence[KeyT], args: Sequence[EncodableT]) -> int:
        """Queue a call of ``script``; returns the index of its reply for :meth:`result`."""
        index = len(self._pipe)
        self._scripts[index] = (script, keys, args)
        self._pipe.evalsha(script.sha, len(keys), *keys, *args)
        return index

    def advisory(self, queue: Callable[[Pipeline], object], *, on_error: OnError) -> None:
        """Queue with ``queue(pipe)`` commands whose error goes to ``on_error``, not raised."""
        start = len(self._pipe)
        queue(self._pipe)
        self._advisory.append((range(start, len(self._pipe)), on_error))

    def execute(self) -> None:
        """Send what was queued; then raise the first error of a command that is not advisory.

        Every command has run when it raises, except after a connection error: then, as for a
        single command, what reached the server is unknown.
        """
        results = self._pipe.execute(raise_on_error=False)
        refused = [i for i in self._scripts if isinstance(results[i], NoScriptError)]
        if refused:
            self._run_again(refused, results)
        self._results = results
        advisory: set[int] = set()
        for indexes, on_error in self._advisory:
            advisory.update(indexes)
            errors = [results[i] for i in indexes if isinstance(results[i], Exception)]
            if errors:
                on_error(errors[0])
        for index, result in enumerate(results):
            if index not in advisory and isinstance(result, Exception):
                raise result

    def _run_again(self, refused: list[int], results: list[Any]) -> None:
        # Redis runs a pipeline's commands in order: each script is loaded before it is run.
        scripts = {self._scripts[i][0].sha: self._scripts[i][0] for i in refused}
        pipe = self._client.pipeline(transaction=False)
        for script in scripts.values():
            pipe.script_load(script.script)
        for index in refused:
            script, keys, args = self._scripts[index]
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = pipe.execute(raise_on_error=False)[len(scripts) :]
        for index, reply in zip(refused, replies, strict=True):
            results[index] = reply

    def result(self, index: int) -> Any:
        """The reply of the command queued at ``index``, once :meth:`execute` has run."""
        if self._results is None:
            raise RuntimeError("the batch has not been executed yet")
        return self._results[index]


def send(
    client: redis.Redis, queue: Callable[[Batch], object], *, budget_s: float, what: str
) -> None:
    """Queue commands with ``queue(batch)`` on a new batch and send it; through a Redis that
    fails, again on a new batch for up to ``budget_s`` seconds (``what`` names it in the log).

    Everything ``queue`` adds must be safe to apply twice: the reply of an attempt that ran may
    be what was lost.
    """

    def attempt() -> None:
        batch = Batch(client)
        queue(batch)
        batch.execute()

    retry_redis(attempt, budget_s=budget_s, what=what)
