"""RedactingStream: text redacted as it arrives in pieces, with no secret cut in two."""

from __future__ import annotations

from itertools import pairwise

import pytest

from workers.observability.redaction import RedactingStream, redact

FILLER = "The answer goes on for a while without anything worth hiding in it. " * 5
SECRETS = [
    "mail alice@example.com today",
    "call +44 20 7946 0958 now",
    "card 4111 1111 1111 1111 on file",
    "set api_key = hunter2hunter2 there",
    "send Authorization: Bearer abcdef0123456789abcdef please",
    "host 10.1.2.3 answered",
]


def streamed(text: str, cuts: list[int], *, margin: int = 256) -> list[str]:
    stream = RedactingStream(margin=margin)
    bounds = [0, *cuts, len(text)]
    out = [stream.feed(text[start:end]) for start, end in pairwise(bounds)]
    return [*out, stream.finish()]


@pytest.mark.parametrize("secret", SECRETS)
def test_a_secret_cut_anywhere_is_redacted_as_a_whole(secret: str) -> None:
    text = f"{FILLER}{secret} {FILLER}"
    start = len(FILLER)
    for cut in range(start, start + len(secret) + 1):
        pieces = streamed(text, [cut], margin=32)
        assert "".join(pieces) == redact(text), cut
        assert redact(text) != text  # the secret is one the patterns know


def test_text_streams_once_it_is_past_the_margin() -> None:
    text = f"{FILLER}{SECRETS[0]} {FILLER}"
    pieces = streamed(text, list(range(10, len(text), 10)), margin=64)

    released = [piece for piece in pieces[:-1] if piece]
    assert len(released) > 5
    assert len(pieces[-1]) <= 64 + 10
    assert "".join(pieces) == redact(text)


def test_a_short_text_comes_out_whole_at_the_end() -> None:
    stream = RedactingStream()
    assert stream.feed("reach alice@") == ""
    assert stream.feed("example.com") == ""
    assert stream.finish() == "reach [EMAIL]"
