"""Simulated OpenAI-compatible LLM provider with injectable latency and faults."""

from chordal.simulator.profiles import ModelProfile, SimConfig
from chordal.simulator.server import build_app, serve

__all__ = ["ModelProfile", "SimConfig", "build_app", "serve"]
