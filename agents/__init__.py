"""What runs: agent specs, jobs, the agent and router tasks, and the producer client."""
