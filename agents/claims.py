"""Idempotency claims: a job resent under the same key is enqueued once (see
:meth:`agents.client.Client.submit`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import redis
from celery import Celery

from workers.watchdog import DEADLINES_KEY

IDEMPOTENCY_PREFIX = "chordal:idempotency:"

# Created pending with the job's id, fingerprint and watchdog deadline in one step; one that
# exists is returned as it is. KEYS: claim, deadlines. ARGV: id, fingerprint, ttl, score or ''.
CLAIM = """
local found = redis.call('HMGET', KEYS[1], 'job_id', 'fingerprint', 'state')
if found[1] then return {found[1], found[2], found[3], 0} end
redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'fingerprint', ARGV[2], 'state', 'pending')
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) end
return {ARGV[1], ARGV[2], 'pending', 1}
"""
# Only the claim of this job id: an expired and re-made claim belongs to another job.
MARK = """
if redis.call('HGET', KEYS[1], 'job_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'published')
return 1
"""
# A claim still pending under this id goes, with its deadline; a claim a concurrent repeat has
# meanwhile published stays.
RELEASE = """
local found = redis.call('HMGET', KEYS[1], 'job_id', 'state')
if found[1] ~= ARGV[1] or found[2] ~= 'pending' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


def claim_key(tenant: str, key: str) -> str:
    """The Redis key of ``key``'s claim: a hash of the pair, so ``a`` + ``b:c`` and ``a:b`` +
    ``c`` are two keys."""
    pair = json.dumps([tenant, key], ensure_ascii=False).encode()
    return IDEMPOTENCY_PREFIX + hashlib.sha256(pair).hexdigest()


def fingerprint(message: Mapping[str, Any]) -> str:
    """The sha256 of the validated job's canonical JSON: equal exactly when the jobs are."""
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Claim(NamedTuple):
    """What an idempotency key holds; ``created`` when this submit made it."""

    job_id: str
    fingerprint: str
    state: str
    created: bool


class ClaimStore:
    """Idempotency claims and deadline registrations, on a Redis client whose every wait is
    bounded (the result backend's own client may wait 120 s, or for ever to connect)."""

    def __init__(self, app: Celery, *, socket_s: float, ttl_s: int) -> None:
        params = dict(getattr(app.backend, "connparams", {}))
        params.update(socket_timeout=socket_s, socket_connect_timeout=socket_s,
                      retry_on_timeout=False)  # fmt: skip
        pool = redis.BlockingConnectionPool(timeout=socket_s, **params)  # type: ignore[no-untyped-call]
        self.client = redis.Redis(connection_pool=pool)
        self.ttl_s = ttl_s
        self._claim = self.client.register_script(CLAIM)
        self._mark = self.client.register_script(MARK)
        self._release = self.client.register_script(RELEASE)

    def claim(self, key: str, job_id: str, digest: str, deadline: float | None) -> Claim:
        """The claim under ``key``, created pending for ``job_id`` (fingerprint ``digest``, and
        watched until ``deadline``) if there was none."""
        score = "" if deadline is None else repr(deadline)
        found = self._claim(keys=[key, DEADLINES_KEY], args=[job_id, digest, self.ttl_s, score])
        job, print_, state = (v.decode() if isinstance(v, bytes) else str(v) for v in found[:3])
        return Claim(job, print_, state, created=bool(found[3]))

    def mark_published(self, key: str, job_id: str) -> None:
        """Record that ``job_id`` reached the broker: repeats return it without publishing."""
        self._mark(keys=[key], args=[job_id])

    def release(self, key: str, job_id: str) -> None:
        """Undo a claim this submit made and could not publish."""
        self._release(keys=[key, DEADLINES_KEY], args=[job_id])
