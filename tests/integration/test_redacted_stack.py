"""CHORDAL_STORE_REDACTED on a real stack: a job's result and streamed tokens hold placeholders,
and once the job ended no key in Redis holds the e-mail address its input carried."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from agents.client import Client
from chordal.stack import LocalStack
from tests.support import stack_settings
from workers.tiers import Tier

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ADDRESS = "alice@example.com"
# The simulator's answer quotes the start of the prompt: both end up in the answer.
INPUT = f"Write to {ADDRESS} or call +44 20 7946 0958 about my order."


@pytest.fixture(scope="module")
def redacting_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = stack_settings(tmp_path_factory.mktemp("redacted"), store_redacted=True)
    with LocalStack(settings, tiers=[Tier.FAST]) as stack:
        yield stack


def holders(client: Any, needle: bytes) -> list[str]:
    """The keys whose values hold ``needle``."""
    found = []
    for raw in client.scan_iter(count=1000):
        kind = client.type(raw).decode()
        values: list[Any]
        if kind == "string":
            values = [client.get(raw) or b""]
        elif kind == "list":
            values = client.lrange(raw, 0, -1)
        elif kind == "hash":
            values = list(client.hgetall(raw).values())
        elif kind == "set":
            values = list(client.smembers(raw))
        elif kind == "zset":
            values = client.zrange(raw, 0, -1)
        elif kind == "stream":
            values = [repr(entry).encode() for entry in client.xrange(raw)]
        else:
            values = []
        if any(needle in value for value in values):
            found.append(raw.decode())
    return found


def test_a_job_stores_only_redacted_text(redacting_stack: LocalStack) -> None:
    client = Client(settings=redacting_stack.settings)
    backend = redis.Redis.from_url(str(redacting_stack.settings.backend_url))
    try:
        job_id = client.submit({"agent": "researcher", "input": INPUT, "tier": "fast",
                                "stream": True, "metadata": {"contact": ADDRESS}})  # fmt: skip
        events = list(client.stream(job_id, timeout=60))
        result = client.wait(job_id, timeout=60)

        # The answer echoed the address and the phone number; the result holds placeholders.
        assert "[EMAIL]" in result["output"]
        assert "[PHONE]" in result["output"]
        assert ADDRESS not in str(result)
        assert "7946" not in str(result)
        assert result["metadata"] == {"contact": "[EMAIL]"}
        # The tokens streamed are the stored answer, piece by piece, redacted too.
        tokens = [event.data["text"] for event in events if event.kind == "token"]
        assert tokens
        assert "".join(tokens) == result["output"]
        assert not [token for token in tokens if "alice" in token or "example.com" in token]

        # Once its message is acknowledged (just after the result is stored), the input is gone
        # from the broker too: nothing in Redis holds the address.
        deadline = time.monotonic() + 10
        while found := holders(backend, ADDRESS.encode()):
            assert time.monotonic() < deadline, f"still holding the address: {found}"
            time.sleep(0.1)
        assert holders(backend, b"[EMAIL]")  # the scan does read what the job stored
    finally:
        backend.close()
        client.app.close()
