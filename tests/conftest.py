"""Fixtures shared by every test."""

from __future__ import annotations

import os

# Before anything imports LiteLLM: never fetch the price map from the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
