from __future__ import annotations

import pytest

from workers.credentials import lacks_password, masked, require_passwords
from workers.errors import ConfigurationError
from workers.settings import Settings


@pytest.mark.parametrize(
    ("url", "lacking"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("rediss://cache:6380/0", True),
        ("redis://:pw@127.0.0.1:6379/0", False),
        ("rediss://worker:pw@cache:6380/0", False),
        ("amqp://guest:guest@127.0.0.1:5672//", False),
        (None, False),
    ],
)
def test_a_redis_url_without_a_password_is_spotted(url: str | None, lacking: bool) -> None:
    assert lacks_password(url) is lacking


def test_servers_refuse_a_redis_without_a_password_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"^CHORDAL_RESULT_BACKEND \(redis://r:6379/1\)"):
        require_passwords(Settings(broker_url="redis://:pw@b:6379/0",
                                   result_backend="redis://r:6379/1"))  # fmt: skip
    require_passwords(Settings(broker_url="redis://:pw@b:6379/0"))
    require_passwords(Settings(broker_url="redis://b:6379/0", allow_no_password=True))


def test_a_url_is_shown_without_its_password() -> None:
    assert masked("redis://:s3cret@h:6379/0") == "redis://:**@h:6379/0"
    assert masked("rediss://user:s3cret@h:6380/0") == "rediss://user:**@h:6380/0"
    assert masked(None) == ""
