"""A component started and stopped around a ``with`` block."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """Subclasses implement :meth:`start` (returning self) and :meth:`stop`."""

    def start(self) -> Self:
        """Start the component; returns it once ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the component; safe to call twice."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
