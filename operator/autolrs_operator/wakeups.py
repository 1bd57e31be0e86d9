"""Wake a job's supervisor when something it cares about changed (a pod event, a new spec)."""

from __future__ import annotations

import asyncio


class Wakeups:
    """One asyncio.Event per job; a notification before the wait is not lost."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def notify(self, namespace: str, name: str) -> None:
        """Wake the job's supervisor if it is waiting (or make its next wait return at once)."""
        self._events.setdefault((namespace, name), asyncio.Event()).set()

    async def wait(self, namespace: str, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification; True if one came."""
        event = self._events.setdefault((namespace, name), asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout=max(timeout, 0.0))
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            event.clear()

    def forget(self, namespace: str, name: str) -> None:
        """Drop the job's event (it was deleted)."""
        self._events.pop((namespace, name), None)
