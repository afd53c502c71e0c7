"""Which tenant submitted which job, so a tenant reads and cancels only its own.

The owner is written before the job is published, under the id the job will get: a job the
gateway accepted always has one, and a publish that failed leaves only a key that expires. A
job without an owner (submitted by another producer, or a team's member) answers 404, as
another tenant's does: an id reveals nothing about whether it exists.
"""

from __future__ import annotations

import redis

OWNER_PREFIX = "chordal:gateway:owner:"


def owner_key(job_id: str) -> str:
    """The key holding ``job_id``'s tenant."""
    return f"{OWNER_PREFIX}{job_id}"


class Owners:
    """Owner records in the results Redis, kept as long as results are."""

    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s

    def record(self, job_id: str, tenant: str) -> None:
        """Record ``tenant`` as ``job_id``'s owner (an id is never reused: NX keeps the first)."""
        self.client.set(owner_key(job_id), tenant, ex=self.ttl_s, nx=True)

    def owns(self, job_id: str, tenant: str) -> bool:
        """Whether ``tenant`` submitted ``job_id``."""
        owner = self.client.get(owner_key(job_id))
        return (
            owner is not None and (owner.decode() if isinstance(owner, bytes) else owner) == tenant
        )
