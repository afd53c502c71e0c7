"""``python -m chordal.cli``: the ``chordal`` command without its console script."""

from chordal.cli import main

main()
