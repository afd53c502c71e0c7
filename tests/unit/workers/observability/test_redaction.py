"""Redaction: each kind of PII and secret caught, ordinary numbers left alone, nesting, previews."""

from __future__ import annotations

import pytest

from workers.observability.redaction import preview, redact, redact_value, secret_placeholder

CAUGHT = {
    "[EMAIL]": [
        "jane.doe@example.com",
        "j.o'hara+billing@mail.example.co.uk".replace("'", ""),
        "ADMIN_42@Sub-Domain.Example.ORG",
    ],
    "[PHONE]": [
        "+44 20 7946 0958",
        "+1 (415) 555-2671",
        "+14155552671",
        "+49 (0)30 1234567",
        "+33 1 23 45 67 89",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "1-800-555-0199",
        "020 7946 0958",
        "07700 900123",
        "06 12 34 56 78",
        "01.23.45.67.89",
        "0171-1234567",
    ],
    "[CARD]": [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5500 0000 0000 0004",
        "3782 822463 10005",
        "6011000990139424",
        "4222222222222",
    ],
    "[API_KEY]": [
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7cD",
        "sk-ant-api03-AbC_dEf-1234567890abcdefghijklmnopqrstuv-wxyzAA",
        "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    ],
    "[TOKEN]": [
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
    ],
    "[IP]": [
        "192.168.1.20",
        "10.0.0.1",
        "203.0.113.255",
        "2001:db8::8a2e:370:7334",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "fe80::1%eth0",
        "::ffff:192.0.2.1",
    ],
}

NOT_CAUGHT = [
    "4111 1111 1111 1112",  # Luhn-invalid
    "1234567812345678",  # Luhn-invalid
    "4111111111111112",
    "3f2b8c1e-9d4a-4e2b-8f1a-0c9d8e7f6a5b",  # Celery task id
    "12345678-1234-1234-1234-123456789012",  # all-digit UUID
    "550e8400-e29b-41d4-a716-446655440000",
    "prompt_tokens=1234 completion_tokens=567890 total 1801234",
    "cost $1,234.56 or 0.0025 USD, 1.5e-06 per token",
    "2024-01-15",
    "2024-01-15T10:20:30.123Z",
    "2024-01-15 10:20:30,123",
    "01.02.2024 12:30",
    "1718000000123",  # a timestamp in ms
    "1718000000.123456",
    "litellm 1.110.2, celery 5.7.0",
    "latency 12:30:45, runtime 0:00:01",
    "00:1A:2B:3C:4D:5E",
    "counts 100 200 3000, ids 0123456789, retries 3",
    "token economics, the bearer of news, max_tokens: 200, tokens=5",
    "x[1::2]",
    "127.0.0.1 and ::1 and 0.0.0.0",
    "redis://127.0.0.1:6379/0",
    "celery@worker1",
]


@pytest.mark.parametrize(
    ("placeholder", "sample"),
    [(placeholder, sample) for placeholder, samples in CAUGHT.items() for sample in samples],
)
def test_each_kind_is_replaced_by_its_placeholder(placeholder: str, sample: str) -> None:
    text = f"Note from the user: {sample}, please handle it."

    redacted = redact(text)

    assert sample not in redacted
    assert redacted == f"Note from the user: {placeholder}, please handle it."


@pytest.mark.parametrize("text", NOT_CAUGHT)
def test_ordinary_numbers_and_ids_are_left_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("api_key=abc123def456", "api_key=[API_KEY]"),
        ('{"api_key": "xyz-789"}', '{"api_key": "[API_KEY]"}'),
        ("{'OPENAI_API_KEY': 's3cr3t'}", "{'OPENAI_API_KEY': '[API_KEY]'}"),
        ("x-api-key: 0123abcd", "x-api-key: [API_KEY]"),
        ("password: hunter2", "password: [SECRET]"),
        ("access_token=abc.def&page=2", "access_token=[TOKEN]&page=2"),
        ("Authorization: Bearer abcdef.ghijk-lmnop", "Authorization: Bearer [TOKEN]"),
        ("'authorization': 'Basic dXNlcjpwYXNz'", "'authorization': 'Basic [TOKEN]'"),
        ("sent Bearer 0a1b2c3d4e5f6a7b8c9d0e1f done", "sent Bearer [TOKEN] done"),
        ("api_key=None", "api_key=None"),
    ],
)
def test_secrets_in_pairs_and_headers_keep_their_names(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_card_followed_by_other_numbers_is_still_caught() -> None:
    assert redact("card 4111 1111 1111 1111 2024 exp") == "card [CARD] 2024 exp"


def test_keys_inside_longer_words_are_not_keys() -> None:
    text = "task-sk-abcdefghijklmnopqrstuvwxyz and risk_live_abcdefghijklmnopqrstu"
    assert redact(text) == text


def test_redaction_is_idempotent() -> None:
    text = (
        "jane@example.com +44 20 7946 0958 4111 1111 1111 1111 api_key=abc "
        "Authorization: Bearer abcdefghijklmnop1234 10.0.0.1 'password': 'x'"
    )
    once = redact(text)
    assert redact(once) == once


def test_a_realistic_log_line_keeps_everything_but_the_pii() -> None:
    line = (
        "Task agents.run[3f2b8c1e-9d4a-4e2b-8f1a-0c9d8e7f6a5b] succeeded in 0.51s: "
        "{'prompt_tokens': 1234, 'cost': 0.0025, 'output': 'Mail jane@example.com from 10.1.2.3'}"
    )
    assert redact(line) == line.replace("jane@example.com", "[EMAIL]").replace("10.1.2.3", "[IP]")


def test_nested_values_are_redacted_and_keys_kept() -> None:
    value = {
        "input": "call me at +1 (415) 555-2671",
        "messages": [{"role": "user", "content": "jane@example.com"}],
        "pair": ("10.0.0.1", 3, None),
        "api_key": "abc",
        "Authorization": "Bearer x",
        "prompt_tokens": 12,
        "jane@example.com": "key kept",
    }

    redacted = redact_value(value)

    assert redacted == {
        "input": "call me at [PHONE]",
        "messages": [{"role": "user", "content": "[EMAIL]"}],
        "pair": ("[IP]", 3, None),
        "api_key": "[API_KEY]",
        "Authorization": "[TOKEN]",
        "prompt_tokens": 12,
        "jane@example.com": "key kept",
    }
    assert value["api_key"] == "abc"  # the original is not modified


@pytest.mark.parametrize(
    ("key", "placeholder"),
    [
        ("api_key", "[API_KEY]"),
        ("OPENAI_API_KEY", "[API_KEY]"),
        ("refresh_token", "[TOKEN]"),
        ("db_password", "[SECRET]"),
        ("prompt_tokens", None),
        ("input", None),
    ],
)
def test_secret_placeholder_by_field_name(key: str, placeholder: str | None) -> None:
    assert secret_placeholder(key) == placeholder


def test_preview_leaves_short_text_alone_but_redacted() -> None:
    assert preview("Hi, I am jane@example.com") == "Hi, I am [EMAIL]"


def test_preview_cuts_long_text_and_says_how_long_it_was() -> None:
    text = "Summarise this report.\n\n" + "word " * 400

    shown = preview(text, limit=40)

    assert shown == f"Summarise this report. word word word wo…({len(text)} chars)"


def test_preview_never_shows_part_of_a_secret_cut_by_the_limit() -> None:
    text = "x" * 70 + " jane.doe@example.com " + "y" * 500

    shown = preview(text, limit=80)

    assert "jane" not in shown
    assert shown.startswith("x" * 70 + " [EMAIL]")


def test_preview_does_not_cut_a_placeholder_in_half() -> None:
    text = "x" * 75 + " jane@example.com wrote this"

    shown = preview(text, limit=80)

    assert shown == "x" * 75 + f" …({len(text)} chars)"


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "unit", ["a.", "1 ", "1-", "+1 ", "a@", "a:", "0 12", "4111 ", "eyJ", "ab:", "token: ", "x@a."]
)
def test_adversarial_input_takes_linear_time(unit: str) -> None:
    # Catastrophic backtracking would take minutes on 60 kB; linear patterns take milliseconds.
    text = unit * (60_000 // len(unit))
    assert len(redact(text)) > 0
