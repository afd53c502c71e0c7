"""A LiteLLM proxy config as LiteLLM's users write it, as the catalog of a real stack.

No entry carries a Chordal field. One model group has two deployments (OpenAI's and an Azure
one), and beside it sit what such files also hold: an embedding model, a provider wildcard, and
``litellm_settings`` / ``router_settings`` blocks. The stack (offline profile: the simulator
answers for every deployment) must start on it unedited, say once per worker what it skipped,
and route jobs across both deployments of the group.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agents.client import Client
from chordal.stack import LocalStack
from tests.support import stack_settings
from workers.tiers import Tier

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GROUP = "gpt-4.1-mini"
CONFIG = """
model_list:
  - model_name: gpt-4.1-mini
    litellm_params:
      model: openai/gpt-4.1-mini
      api_key: os.environ/OPENAI_API_KEY
      rpm: 600
  - model_name: gpt-4.1-mini
    litellm_params:
      model: azure/chordal-gpt-41-mini-eu
      api_base: os.environ/AZURE_API_BASE
      api_key: os.environ/AZURE_API_KEY
      api_version: "2024-10-21"
      rpm: 600
    model_info:
      id: azure-eu
      base_model: gpt-4.1-mini
  - model_name: text-embedding
    litellm_params:
      model: openai/text-embedding-3-small
  - model_name: "openai/*"
    litellm_params:
      model: "openai/*"

litellm_settings:
  num_retries: 3
  request_timeout: 30
  drop_params: true
router_settings:
  routing_strategy: simple-shuffle
  redis_host: localhost
"""


@pytest.fixture(scope="module")
def pasted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    folder = tmp_path_factory.mktemp("litellm-config")
    catalog = folder / "litellm.yaml"
    catalog.write_text(CONFIG)
    settings = stack_settings(folder, catalog_path=catalog)
    with LocalStack(settings, tiers=(Tier.FAST, Tier.BALANCED, Tier.PREMIUM)) as stack:
        yield stack


def test_jobs_route_across_both_deployments_of_the_group(pasted: LocalStack) -> None:
    client = Client(settings=pasted.settings)
    try:
        ids = [client.submit({"agent": "summarizer", "input": f"job {n}"}) for n in range(24)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(lambda job_id: client.wait(job_id, timeout=90), ids))
    finally:
        client.app.close()

    assert {result["status"] for result in results} == {"succeeded"}
    assert {result["model"] for result in results} == {GROUP}
    spread = Counter(result["deployment"] for result in results)
    # Two deployments, equal weights: each takes a share (all 24 on one: p = 2^-23).
    assert len(spread) == 2, spread
    assert "azure-eu" in spread


def test_each_worker_says_once_what_it_skipped(pasted: LocalStack) -> None:
    logs = Path(pasted.settings.data_dir) / "logs"
    router = (logs / "router.log").read_text()

    embedding, wildcard = 'entry 3 (model_name "text-embedding")', 'entry 4 (model_name "openai/*")'
    said = (embedding, wildcard, "num_retries")
    for line in said:
        assert router.count(line) == 1, (line, router[:3000])


def test_catalog_check_reads_it_as_the_workers_do(pasted: LocalStack) -> None:
    command = ["catalog", "check", str(pasted.settings.catalog_path)]
    done = subprocess.run(
        [sys.executable, "-m", "chordal.cli", *command], env=pasted.env(), capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert "azure-eu" in done.stdout
    assert "skipped catalog entry 3 (text-embedding)" in done.stdout, done.stdout
