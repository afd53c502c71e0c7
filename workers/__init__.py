"""How it runs: settings, the Celery app, tiers and queues, CLI, local stack, simulator."""
