"""Simulated OpenAI-compatible LLM provider with injectable latency and faults."""

from workers.simulator.profiles import ModelProfile, SimConfig
from workers.simulator.server import build_app, serve

__all__ = ["ModelProfile", "SimConfig", "build_app", "serve"]
