"""Chordal's error tree, named by what the caller can do about each error.

::

    ChordalError
    ├── InvalidJob            fix the request; retrying the same job fails the same way
    │   ├── UnknownAgent
    │   ├── NoEligibleModel   no model satisfies the job's constraints (names the constraint)
    │   ├── MalformedMessage  a queued message is not a job; it was kept on the dead-letter list
    │   └── IdempotencyConflict  another job was already submitted under this idempotency key
    ├── RetryLater            nothing is wrong with the job; try again after ``retry_after``
    │   ├── BrokerUnavailable the broker (or the result store) did not answer in time
    │   └── ProviderUnavailable
    │       ├── RateLimited
    │       ├── ProviderTimeout  the provider did not answer within the call's timeout
    │       └── CircuitOpen   the model's shared circuit breaker refuses calls for now
    ├── BudgetExceeded        a usage limit stops the job
    ├── Cancelled             someone cancelled the job
    │   └── WorkerStopping    the worker is shutting down: the task goes back to its queue
    ├── DeadlineExceeded      the job's (or its team's) deadline passed
    ├── AgentFailed           the run failed (bad output, every attempt failed)
    │   └── InvalidOutput
    └── ConfigurationError    the deployment is set up wrongly (no broker, bad catalog)

Every exception keeps its fields in ``args`` so Celery's JSON result backend can rebuild it in
another process.
"""

from __future__ import annotations


class ChordalError(Exception):
    """Root of every error Chordal raises on purpose."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidJob(ChordalError):
    """The job is wrong; ``field`` names the part to fix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field)

    @property
    def field(self) -> str | None:
        """The job field at fault, if one is."""
        return self.args[1]  # type: ignore[no-any-return]


class UnknownAgent(InvalidJob):
    """The job names an agent that no registry defines."""


class NoEligibleModel(InvalidJob):
    """No catalog model satisfies the job; the message says which constraint ruled them out."""


class MalformedMessage(InvalidJob):
    """A message on a Chordal queue could not be read as a job; it went to the dead-letter list."""


class IdempotencyConflict(InvalidJob):
    """The idempotency key was used before for a different job: use a new key, or resend the
    same job to get the first one's id."""


class RetryLater(ChordalError):
    """A transient condition; the same job may succeed after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after)

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before trying again, when the provider said so."""
        return self.args[1]  # type: ignore[no-any-return]


class BrokerUnavailable(RetryLater):
    """The broker or the result store did not answer within the bound; nothing was enqueued,
    unless a publish timed out waiting for its reply (a retry with the same idempotency key then
    publishes the same job id, which workers run once)."""


class ProviderUnavailable(RetryLater):
    """The model's provider failed (5xx, timeout, connection error, outage)."""


class RateLimited(ProviderUnavailable):
    """The provider refused the call for rate reasons (HTTP 429)."""


class ProviderTimeout(ProviderUnavailable):
    """The provider did not answer within the call's timeout."""


class CircuitOpen(ProviderUnavailable):
    """The model's circuit breaker is open (or its one half-open probe is taken): use another."""


class BudgetExceeded(ChordalError):
    """A cost limit (job or tenant budget) stops the job."""


class Cancelled(ChordalError):
    """The job was cancelled; nothing of it runs any more."""


class WorkerStopping(Cancelled):
    """The worker is shutting down and stopped this call; its message goes back to the queue
    for another worker, so the job itself goes on."""


class DeadlineExceeded(ChordalError):
    """The job's deadline passed before it could finish."""


class AgentFailed(ChordalError):
    """The agent's run failed for a reason retrying elsewhere did not fix."""


class InvalidOutput(AgentFailed):
    """The model's answer does not match the agent's output schema."""


class ConfigurationError(ChordalError):
    """Chordal is configured wrongly; the message says what to set."""
