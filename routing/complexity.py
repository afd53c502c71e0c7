"""A job's complexity (0-1) estimated from its input, when the producer asks for ``auto``.

A cheap heuristic, not a model: it reads the signals a person would -- how long the task is,
whether it asks for reasoning, proof, design or code, how many questions it holds -- and lands
between 0.1 (a short lookup) and 0.95 (a long, multi-part reasoning task). The router uses it
only to weigh quality against cost, so being roughly right is enough; a producer that needs
better asks for ``classify`` (the classifier agent labels the job) or sets a number.
"""

from __future__ import annotations

import math
import re

# Words that ask for more than recall or rewording.
REASONING = re.compile(
    r"\b(why|prove|proof|derive|analy[sz]e|compare|trade-?offs?|design|architect\w*|optimi[sz]e"
    r"|debug|step[- ]by[- ]step|reason\w*|evaluate|critique|plan|strategy|implement|refactor"
    r"|algorithm|complexity|edge cases?)\b",
    re.IGNORECASE,
)
SIMPLE = re.compile(
    r"\b(summari[sz]e|translate|list|extract|classify|label|rephrase|spell|format)\b",
    re.IGNORECASE,
)
CODE = re.compile(r"```|\bdef |\bclass |\bfunction\b|;\s*$|\{\s*$", re.MULTILINE)
FLOOR, CEILING = 0.1, 0.95


def estimate_complexity(text: str) -> float:
    """Estimate how hard ``text`` is as a task, between 0.1 and 0.95."""
    words = len(text.split())
    # Longer tasks are harder, with diminishing returns: 10 words ~0.1, 1,000 words ~0.3.
    score = 0.15 * math.log10(max(words, 1))
    score += 0.12 * min(len(REASONING.findall(text)), 4)
    score += 0.15 if CODE.search(text) else 0.0
    score += 0.05 * min(max(text.count("?") - 1, 0), 3)
    score -= 0.1 * min(len(SIMPLE.findall(text)), 2)
    return round(min(CEILING, max(FLOOR, score)), 3)
