"""Handing a task's id over to the task that finishes its work, without ``Task.replace``'s
exception when nothing needs it.

``Task.replace`` publishes the replacement under the task's own id and then raises ``Ignore``
so the worker stores nothing. Celery's tracer turns that ``Ignore`` into two billiard
``ExceptionInfo`` objects, and on Python 3.11 each copies the positions of every instruction of
every frame in the traceback -- Celery's own ``trace_task`` among them. Measured by
``chordal bench`` (row b), that was half of the router's CPU: ~3.5 ms per job.

For a task that is not part of a chord, chain, group or linked callback -- a job as a producer
sent it -- :func:`hand_off` does what ``replace`` does (same id, root and nesting count) and
returns instead: the request is marked to store no result, so the job's id resolves to the
replacement's result exactly as before. Anything else still goes through ``Task.replace``, which
carries chords, chains and callbacks over to the replacement.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.canvas import Signature

# What a handed-off task returns. The worker logs it; its task-succeeded event is not sent, so
# Flower shows the job running until the replacement ends it (as after ``Task.replace``).
HANDED_OFF = "chordal:handed-off"
HANDED_OFF_REPR = repr(HANDED_OFF)


def hand_off(task: Task, sig: Signature) -> Any:
    """Finish ``task`` by sending ``sig`` under its id: ``return hand_off(self, sig)``."""
    request = task.request
    linked = request.chord or request.chain or request.callbacks or request.errbacks
    canvas = type(sig) is not Signature  # a chain, group or chord needs replace's handling
    if linked or request.group or request.is_eager or canvas:
        return task.replace(sig)
    sig.freeze(request.id)
    sig.set(
        root_id=request.root_id,
        replaced_task_nesting=request.get("replaced_task_nesting", 0) + 1,
    )
    sig.apply_async()
    # The replacement stores the result under this id; this task must not store its own.
    request.ignore_result = True
    return HANDED_OFF


def is_hand_off_success(event_type: str, fields: dict[str, Any]) -> bool:
    """Whether a task event reports a hand-off rather than a result (see :data:`HANDED_OFF`)."""
    return event_type == "task-succeeded" and fields.get("result") == HANDED_OFF_REPR
