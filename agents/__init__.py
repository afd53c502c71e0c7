"""What runs: jobs, agent and team specs, the router, agent and team tasks, and the producer
client. It may import ``routing`` and ``workers``; :mod:`agents.client` imports neither
``routing`` nor LiteLLM, so producers stay small."""
