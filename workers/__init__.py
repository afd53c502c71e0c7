"""How it runs: the Celery runtime every task uses (app, settings, queues and tiers, execution
loop, hand-off, dead letters, watchdog, cancellation, Redis pools, errors) and its telemetry in
:mod:`workers.observability`. It imports nothing from ``agents``, ``routing`` or ``chordal``."""
