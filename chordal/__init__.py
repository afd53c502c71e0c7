"""What a person or an operator runs: the ``chordal`` CLI, the local stack and embedded broker,
the provider simulator, the queue exporter, Flower, the cost report. It may import everything
below it (``agents``, ``routing``, ``workers``); nothing below imports it."""
