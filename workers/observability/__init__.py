"""Telemetry the tasks call: Prometheus metrics, OpenTelemetry tracing, redacted JSON logs and
the redaction itself. Like the rest of :mod:`workers`, it imports nothing from the rooms above:
callers pass plain values in."""
