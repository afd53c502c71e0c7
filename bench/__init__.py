"""Benchmarks for Chordal: run ``python -m bench.concurrency --help``."""
