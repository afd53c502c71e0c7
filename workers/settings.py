"""The one settings object: every knob of Chordal, read from ``CHORDAL_*`` environment variables.

Nothing else in the project reads ``os.environ``; ``celeryconfig.py`` turns these settings into
Celery configuration.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from workers.settings_access import AccessSettings
from workers.tiers import QUALITY_TIERS, Tier

# LiteLLM downloads its price map at import unless told otherwise; workers import this module
# before LiteLLM, so setting the default here covers every process.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# What a tenant name may be: jobs, API keys and signing certificates all name tenants so.
TENANT_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
PROVIDER_KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY")
Profile = Literal["offline", "cloud"]
# Blended USD per 1M tokens (routing/catalog_infer.py): these bands put 8 of the 10 shipped models
# in their benchmark tier (both Claude models price a tier above their thinking-off scores).
DEFAULT_TIER_PRICE_BANDS_USD = {Tier.FAST: 1.0, Tier.BALANCED: 5.0}
# About the middle of the shipped entries' figures in each tier.
DEFAULT_TIER_EXPECTED_LATENCY_S = {
    Tier.FAST: 1.2,
    Tier.BALANCED: 4.0,
    Tier.PREMIUM: 10.0,
    Tier.LOCAL: 1.5,
}


class Settings(AccessSettings):
    """Chordal's configuration; each field is ``CHORDAL_<FIELD>`` in the environment (the
    access fields, signing, TLS and the gateway's, are in :mod:`workers.settings_access`)."""

    model_config = SettingsConfigDict(env_prefix="CHORDAL_", extra="ignore")

    broker_url: str | None = Field(
        default=None,
        description="redis://, rediss:// or amqp:// URL; unset means `chordal dev` starts Valkey.",
    )
    result_backend: str | None = Field(
        default=None, description="Redis URL for results; defaults to the broker when it is Redis."
    )
    profile: Literal["auto", "offline", "cloud"] = Field(
        default="auto",
        description="offline: every model served by the simulator; auto: offline unless a "
        "provider key is set.",
    )
    catalog_path: Path | None = Field(
        default=None, description="LiteLLM model_list YAML, or a whole LiteLLM proxy config."
    )
    # What an entry leaves out (README, "Bring your LiteLLM config").
    tier_price_bands_usd: dict[Tier, float] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_PRICE_BANDS_USD),
        description="An entry without a tier goes in the first tier whose band holds its blended "
        "price (USD per 1M tokens, the mean of input and output); above every band, premium. "
        'JSON: {"fast": 1.0, "balanced": 5.0}. Never local.',
    )
    tier_expected_latency_s: dict[Tier, float] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_EXPECTED_LATENCY_S),
        description="An entry without expected_latency_s starts at its tier's (JSON; tiers "
        "left out keep theirs), until live latency takes over.",
    )
    agents_path: Path | None = Field(
        default=None, description="A YAML file or a folder of YAML files with extra agents."
    )
    simulator_url: str = "http://127.0.0.1:8765/v1"
    data_dir: Path = Path(".chordal")

    # The local tier (README, "A real local model"): models on this machine, at no charge.
    local_model: bool = Field(
        default=False,
        description="Turn the local tier on; `chordal dev`/`demo` then start llama.cpp's server "
        "with SmolLM2 unless local_model_url names a server.",
    )
    local_model_url: str | None = Field(
        default=None,
        description="An OpenAI-compatible server for the local tier (llama.cpp, vLLM, Ollama), "
        "e.g. http://127.0.0.1:11434/v1; setting it turns the tier on.",
    )
    local_catalog_path: Path | None = Field(
        default=None, description="The local tier's models; unset: SmolLM2-135M (local.yaml)."
    )
    local_concurrency: int = Field(
        default=2,
        ge=1,
        description="In-flight calls per local tier worker: a CPU-bound server answers one at "
        "a time, and more calls would only wait there, hidden from the queue.",
    )

    task_time_limit_s: float = Field(
        default=600.0, gt=0, description="Longest allowed task; enforced by an asyncio timeout."
    )
    visibility_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="Redis redelivers a message unacknowledged this long: the last resort "
        "behind the heartbeat restore (docs/reliability.md).",
    )
    restore_interval_s: int = Field(
        default=10, ge=1, description="How often kombu sweeps for messages past the visibility."
    )
    worker_dead_after_s: float = Field(
        default=30.0,
        gt=0,
        description="A worker process whose heartbeat is older than this is dead: a live one "
        "gives its unacknowledged messages back to their queues.",
    )
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="How often each worker process beats and renews leases."
    )
    shutdown_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="On SIGTERM, how long in-flight tasks may run before what is left goes back.",
    )
    redis_retry_s: float = Field(
        default=30.0,
        gt=0,
        description="How long bookkeeping, result and status writes retry a Redis that fails.",
    )
    startup_wait_s: float = Field(
        default=30.0, gt=0, description="How long a starting worker waits for Redis."
    )
    max_deliveries: int = Field(
        default=5, ge=1, description="Deliveries of one message before it is dead-lettered."
    )
    eta_task_limit: int = Field(
        default=1_000,
        ge=1,
        description="Countdown messages (deferred copies) one worker process holds at most.",
    )
    max_input_bytes: int = Field(
        default=1_048_576, ge=1, description="Largest job input (UTF-8 bytes)."
    )
    max_metadata_bytes: int = Field(
        default=16_384, ge=1, description="Largest job metadata (as JSON)."
    )
    max_json_depth: int = Field(default=32, ge=2, description="Deepest nesting in a job.")
    rabbitmq_quorum: bool = Field(
        default=False,
        description="On RabbitMQ, declare quorum queues that count deliveries and drop a "
        "message past max_deliveries (no message priorities on RabbitMQ before 4.0).",
    )
    dead_letter_max: int = Field(
        default=10_000, ge=1, description="Dead letters kept; the oldest go first."
    )
    dead_letter_retention_days: float = Field(
        default=14.0, gt=0, description="How long the dead-letter list is kept after its last."
    )
    result_expires_s: int = Field(default=86_400, gt=0, description="0 would break chords.")
    llm_timeout_s: float = Field(default=120.0, gt=0, description="Per LLM call.")
    max_attempts: int = Field(default=3, ge=1, description="Models tried per job.")

    tier_concurrency: int = Field(default=256, ge=1, description="In-flight calls per process.")
    pinned_skip_router: bool = Field(
        default=True,
        description="A job pinned to a provider tier goes straight to that tier's queue, and "
        "its worker routes it (one hop instead of two).",
    )
    tier_pool: Literal["loop", "threads"] = Field(
        default="loop",
        description="How a tier worker runs its tasks: as greenlets on its event loop "
        "(workers/loop_pool.py), or a thread per task (Celery's threads pool).",
    )
    worker_processes: int | None = Field(
        default=None,
        ge=1,
        description="Processes per `chordal worker` (unset: the container's CPUs).",
    )
    router_concurrency: int = Field(default=8, ge=1)
    redis_connections: int | None = Field(
        default=None,
        ge=2,
        description="Redis connections per worker process and pool (broker, results, fleet "
        "state); threads wait for a free one. Default: one per thread, and 32 to spare.",
    )
    dead_letter_key: str = "chordal:dead_letter"
    idempotency_ttl_s: int = Field(default=86_400, gt=0)
    submit_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a submit may wait for the broker and Redis."
    )
    watchdog_interval_s: float = Field(default=5.0, gt=0, description="Between sweeps.")
    watchdog_grace_s: float = Field(
        default=30.0, ge=0, description="How long past its deadline a job may still finish."
    )

    # Routing state shared by the fleet through Redis (docs/routing.md).
    breaker_window_s: float = Field(default=60.0, gt=0, description="Sliding failure window.")
    breaker_min_calls: int = Field(default=10, ge=1, description="Calls before it may trip.")
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_slow_call_s: float = Field(default=30.0, gt=0, description="A slower call is slow.")
    breaker_slow_call_rate: float = Field(default=0.8, gt=0, le=1)
    breaker_open_s: float = Field(default=10.0, gt=0, description="First open period.")
    breaker_max_open_s: float = Field(default=300.0, gt=0, description="Cap on open periods.")
    breaker_probe_lease_s: float = Field(default=60.0, gt=0, description="A probe's lease.")
    rate_window_s: float = Field(
        default=60.0, gt=0, description="The providers' minute, over which rpm/tpm count."
    )
    tenant_budgets_usd: dict[str, float] = Field(
        default_factory=dict, description='Daily USD per tenant, JSON: {"acme": 5.0}.'
    )
    default_tenant_budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="Daily USD for tenants not listed; unset: none (refused) once any tenant has "
        "a budget, no limit while none has.",
    )
    budget_reservation_ttl_s: float = Field(
        default=900.0, gt=0, description="An unsettled reservation (a dead worker's) lapses."
    )
    latency_window: int = Field(default=50, ge=1, description="Calls per model's live p50/p95.")
    latency_min_samples: int = Field(default=5, ge=1)
    latency_max_age_s: float = Field(default=300.0, gt=0)
    route_cache_s: float = Field(
        default=1.0, ge=0, description="How long the router reuses latency and queue readings."
    )
    spill_depth: int = Field(
        default=1_000, ge=1, description="Tier queue depth beyond which unpinned jobs spill."
    )
    fallback_tiers: Literal["none", "down", "up", "any"] = Field(
        default="none", description="Tiers a tier-pinned job may fall back to."
    )
    deployment_strategy: Literal["simple-shuffle", "least-busy"] | None = Field(
        default=None,
        description="A group's deployment: by weight, or fewest in flight. Unset: the catalog's "
        "router_settings.routing_strategy, else simple-shuffle.",
    )
    max_requeues: int = Field(
        default=5, ge=0, description="Times a job waits (countdown) for a model to free up."
    )

    # Observability (docs/observability.md).
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Each worker's /metrics port; 0: none."
    )
    exporter_port: int = Field(default=9808, ge=1, le=65535, description="`chordal exporter`.")
    metrics_max_tenants: int = Field(default=50, ge=1, description="Tenant label values kept.")
    ledger_retention_days: int = Field(default=90, ge=1, description="Cost ledger retention.")
    log_json: bool = Field(default=False, description="One JSON object per log line.")
    log_level: str = "INFO"
    log_prompts: bool = Field(
        default=False, description="Log prompts and outputs in full (never, by default)."
    )
    store_redacted: bool = Field(
        default=False,
        description="Keep only redacted text (e-mails, phones, cards, keys, IPs as placeholders) "
        "in results, parked members, kept answers, dead letters and streamed tokens "
        "(docs/security.md).",
    )
    task_events: bool = Field(default=True, description="Workers send task events (Flower).")
    flower_port: int = Field(default=5555, ge=0, le=65535, description="0: no Flower in dev.")
    flower_user: str = "chordal"
    flower_password: str = Field(
        default="", description="Flower's basic-auth password; `chordal dev` makes one if unset."
    )

    sim_seed: int = 0
    sim_latency_scale: float = Field(default=1.0, ge=0)

    @field_validator("tier_price_bands_usd")
    @classmethod
    def _bands_rise_with_the_tiers(cls, bands: dict[Tier, float]) -> dict[Tier, float]:
        # Local is where a model runs, never what its price says; premium is whatever is dearer.
        if Tier.LOCAL in bands or not bands:
            raise ValueError("give a band for fast and/or balanced (local is never inferred)")
        if Tier.PREMIUM in bands:
            raise ValueError("premium has no band: it holds every price above the others")
        ordered = [bands[tier] for tier in QUALITY_TIERS if tier in bands]
        if min(ordered) < 0 or ordered != sorted(ordered):
            raise ValueError("bands are non-negative and rise from fast to balanced")
        return bands

    @field_validator("tier_expected_latency_s")
    @classmethod
    def _every_tier_has_a_latency(cls, given: dict[Tier, float]) -> dict[Tier, float]:
        if any(value <= 0 for value in given.values()):
            raise ValueError("latencies are greater than 0")
        return {**DEFAULT_TIER_EXPECTED_LATENCY_S, **given}

    @model_validator(mode="after")
    def _visibility_above_time_limit(self) -> Settings:
        # A message unacked for longer than the visibility timeout is delivered again, so a
        # long task would run twice (celery #5935).
        if self.visibility_timeout_s <= self.task_time_limit_s:
            msg = (
                f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed "
                f"task_time_limit_s ({self.task_time_limit_s})"
            )
            raise ValueError(msg)
        # A heartbeat must land several times within the dead-after window, or a live worker
        # would be taken for dead between two beats.
        if self.heartbeat_interval_s * 3 > self.worker_dead_after_s:
            msg = (
                f"worker_dead_after_s ({self.worker_dead_after_s}) must be at least three "
                f"heartbeats (heartbeat_interval_s {self.heartbeat_interval_s})"
            )
            raise ValueError(msg)
        return self

    def tenant_budget_usd(self, tenant: str) -> float | None:
        """The daily budget of ``tenant``, if it has one.

        Once budgets are in force (any tenant listed), a tenant not listed gets the default
        budget, and none (0) without one: a producer must not escape its budget by naming a
        tenant nobody listed.
        """
        if tenant in self.tenant_budgets_usd:
            return self.tenant_budgets_usd[tenant]
        if self.default_tenant_budget_usd is not None:
            return self.default_tenant_budget_usd
        return 0.0 if self.tenant_budgets_usd else None

    @property
    def resolved_profile(self) -> Profile:
        """The catalog profile in force: ``auto`` becomes cloud only when a provider key is set."""
        if self.profile != "auto":
            return self.profile
        return "cloud" if any(os.environ.get(var) for var in PROVIDER_KEY_VARS) else "offline"

    @property
    def local_tier(self) -> bool:
        """Whether the local tier is on: its models join the catalog and a worker serves it."""
        return self.local_model or self.local_model_url is not None

    @property
    def redis_pool_size(self) -> int:
        """Connections each Redis pool of a worker process may open (``redis_connections``)."""
        if self.redis_connections is not None:
            return self.redis_connections
        return max(self.tier_concurrency, self.router_concurrency, self.local_concurrency) + 32

    @property
    def backend_url(self) -> str | None:
        """Where results live: the configured backend, else the broker when it is Redis."""
        if self.result_backend:
            return self.result_backend
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def env_secret(name: str) -> str | None:
    """Environment variable ``name``, for catalog values written ``os.environ/NAME``."""
    return os.environ.get(name)
