"""Run the provider simulator: ``python -m chordal.simulator --help``."""

from chordal.simulator.server import main

main()
