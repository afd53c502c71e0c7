"""Producers: cheap to import, and able to enqueue without Chordal's code at all."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from celery import Celery

from agents.client import Client
from chordal.stack import LocalStack

pytestmark = pytest.mark.integration

SUBMIT = """
import json, sys
from agents.client import Client
job_id = Client().submit({"agent": "summarizer", "input": "from a fresh interpreter"})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("litellm", "routing"))
print(json.dumps({"job_id": job_id, "loaded": loaded}))
"""


def test_submit_imports_neither_litellm_nor_routing(stack: LocalStack, client: Client) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SUBMIT], env=stack.env(), capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout.splitlines()[-1])

    assert report["loaded"] == []
    assert client.wait(report["job_id"], timeout=60)["agent"] == "summarizer"


def test_plain_celery_producer_enqueues_by_task_name(stack: LocalStack) -> None:
    url = stack.settings.broker_url
    foreign = Celery("someone-else", broker=url, backend=url)
    try:
        result = foreign.send_task(
            "chordal.route", args=[{"agent": "classifier", "input": "refund please"}],
            queue="router",
        )  # fmt: skip

        answer = result.get(timeout=60)
    finally:
        foreign.close()

    assert answer["agent"] == "classifier"
    assert answer["structured"]["label"]
