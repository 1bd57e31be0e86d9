"""The StateStore interface every backend implements, and its errors."""

from __future__ import annotations

import abc
from typing import Any


class StaleWriterError(RuntimeError):
    """A compare-and-set lost: another writer stored a newer controller state."""


class StoreUnavailableError(RuntimeError):
    """The store cannot be reached (after the backend's bounded retries)."""


class StateStore(abc.ABC):
    """Versioned controller state (compare-and-set), a decision log and a heartbeat.

    ``version`` starts at 0 (nothing stored) and grows by one on every successful save.
    """

    @abc.abstractmethod
    def load_state(self) -> tuple[int, dict[str, Any] | None]:
        """Return ``(version, state)``; ``(0, None)`` when nothing was stored yet."""

    @abc.abstractmethod
    def save_state(self, state: dict[str, Any], expected_version: int) -> int:
        """Store ``state`` if the stored version is still ``expected_version``.

        Returns the new version; raises StaleWriterError when another writer got there first.
        """

    @abc.abstractmethod
    def append_decision(self, decision: dict[str, Any]) -> None:
        """Append one decision (a JSON-able dict) to the job's decision log."""

    @abc.abstractmethod
    def decisions(self) -> list[dict[str, Any]]:
        """Every decision appended so far, oldest first."""

    @abc.abstractmethod
    def heartbeat(self, info: dict[str, Any], ttl_seconds: float) -> None:
        """Publish step/stage/LR/best predicted loss; it expires after ``ttl_seconds``."""

    @abc.abstractmethod
    def read_heartbeat(self) -> dict[str, Any] | None:
        """The last heartbeat, or None when none was written or it expired."""

    def close(self) -> None:
        """Release connections and flush pending writes."""

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
