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
FLUSH``) answers ``NOSCRIPT`` without running it, so :meth:`Batch.execute` runs only those
commands again through their :class:`~redis.commands.core.Script`, which loads it. A command
that ran is never sent twice: it would count a call twice in a budget, a limit or the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, KeyT

__all__ = ["Batch", "OnError"]

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
        for index, (script, keys, args) in self._scripts.items():
            if isinstance(results[index], NoScriptError):
                try:
                    results[index] = script(keys=keys, args=args)
                except redis.ResponseError as exc:
                    results[index] = exc
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

    def result(self, index: int) -> Any:
        """The reply of the command queued at ``index``, once :meth:`execute` has run."""
        if self._results is None:
            raise RuntimeError("the batch has not been executed yet")
        return self._results[index]
