"""Run the provider simulator: ``python -m workers.simulator --help``."""

from workers.simulator.server import main

main()
