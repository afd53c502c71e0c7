"""Where a job runs: the model catalog, scoring, breakers, rate limits, budgets, latency, the
ledger and the LiteLLM call. It may import ``workers``, never ``agents`` or ``chordal``."""

# Importing the settings first sets LITELLM_LOCAL_MODEL_COST_MAP, before any routing module
# imports LiteLLM (which would otherwise fetch its price map over the network).
import workers.settings  # noqa: F401
