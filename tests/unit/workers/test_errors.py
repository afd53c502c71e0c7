"""The error tree: every error pickles and crosses Celery's JSON result backend intact."""

from __future__ import annotations

import inspect
import json
import pickle

import pytest
from celery import Celery
from celery.backends.base import BaseBackend

from workers import errors
from workers.errors import (
    AgentFailed,
    BudgetExceeded,
    ChordalError,
    ConfigurationError,
    InvalidJob,
    InvalidOutput,
    MalformedMessage,
    NoEligibleModel,
    ProviderUnavailable,
    RateLimited,
    RetryLater,
    UnknownAgent,
)

ALL_ERRORS = sorted(
    (
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    ),
    key=lambda cls: cls.__name__,
)


def make_error(cls: type[ChordalError]) -> ChordalError:
    """An instance of ``cls`` with every field it carries set to a non-default value."""
    if issubclass(cls, InvalidJob):
        return cls(f"{cls.__name__}: max_cost_usd too low", "max_cost_usd")
    if issubclass(cls, RetryLater):
        return cls(f"{cls.__name__}: provider busy", 7.5)
    return cls(f"{cls.__name__}: something went wrong")


@pytest.fixture
def json_backend():
    """A result backend that serializes exceptions as Celery's JSON backends do."""
    app = Celery("chordal-test", set_as_current=False)
    app.conf.result_serializer = "json"
    app.conf.result_accept_content = ["json"]
    yield BaseBackend(app)
    app.close()


def fields(exc: ChordalError) -> dict[str, object]:
    return {name: getattr(exc, name) for name in ("field", "retry_after") if hasattr(exc, name)}


def test_every_error_class_is_covered() -> None:
    assert len(ALL_ERRORS) == 19
    assert all(issubclass(cls, ChordalError) for cls in ALL_ERRORS)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_error_survives_pickle(cls: type[ChordalError]) -> None:
    # Given
    original = make_error(cls)

    # When
    copy = pickle.loads(pickle.dumps(original))

    # Then
    assert type(copy) is cls
    assert copy.args == original.args
    assert str(copy) == str(original)
    assert str(copy).startswith(f"{cls.__name__}: ")
    assert fields(copy) == fields(original)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_error_survives_the_json_result_backend(json_backend: BaseBackend, cls) -> None:
    # Given
    original = make_error(cls)

    # When: serialized as the backend stores it, through real JSON, and rebuilt
    stored = json.loads(json.dumps(json_backend.prepare_exception(original)))
    rebuilt = json_backend.exception_to_python(stored)

    # Then
    assert type(rebuilt) is cls
    assert tuple(rebuilt.args) == original.args
    assert str(rebuilt) == str(original)
    assert fields(rebuilt) == fields(original)


def test_fields_are_kept_in_args() -> None:
    assert InvalidJob("bad input", "input").field == "input"
    assert InvalidJob("bad job").field is None
    assert RateLimited("slow down", 3.0).retry_after == 3.0
    assert ProviderUnavailable("down").retry_after is None


def test_str_is_the_message_or_the_class_name() -> None:
    assert str(NoEligibleModel("no model fits", "tier")) == "no model fits"
    assert str(RateLimited("slow down", 3.0)) == "slow down"
    assert str(AgentFailed()) == "AgentFailed"


@pytest.mark.parametrize("cls", [NoEligibleModel, UnknownAgent, MalformedMessage])
def test_user_errors_are_invalid_jobs(cls: type[ChordalError]) -> None:
    assert issubclass(cls, InvalidJob)
    assert not issubclass(cls, RetryLater)


def test_rate_limited_is_a_provider_outage_to_retry_later() -> None:
    assert issubclass(RateLimited, ProviderUnavailable)
    assert issubclass(ProviderUnavailable, RetryLater)
    assert not issubclass(RetryLater, InvalidJob)


def test_invalid_output_is_an_agent_failure() -> None:
    assert issubclass(InvalidOutput, AgentFailed)
    assert not issubclass(AgentFailed, RetryLater)


@pytest.mark.parametrize(
    "cls", [InvalidJob, RetryLater, BudgetExceeded, AgentFailed, ConfigurationError]
)
def test_branches_hang_directly_off_the_root(cls: type[ChordalError]) -> None:
    assert cls.__bases__ == (ChordalError,)
