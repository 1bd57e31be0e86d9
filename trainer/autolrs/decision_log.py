"""The decision stream across resumes: which logged entries a replay repeats, and which it voids.

A resumed run replays the steps after its checkpoint. Under the same world size the replay
is exact, so entries the lost run already logged are not appended again. Under another
world size (an elastic scale, which torchrun turns into a restart) the replay differs from
some point on: the trainer then appends one ``superseded`` entry naming the lost run's
entries it voids, and logs the replay from there. ``effective`` applies those entries, so a
reader sees one consistent log.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

SUPERSEDED = "superseded"


def plain(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` as it reads back from a store (a JSON round trip: tuples become lists)."""
    return json.loads(json.dumps(event, allow_nan=False))


def effective(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log without voided entries and without the ``superseded`` markers, oldest first."""
    out: list[dict[str, Any]] = []
    for entry in entries:
        if entry.get("type") == SUPERSEDED:
            voided = set(entry.get("ids") or [])
            out = [e for e in out if e.get("id") not in voided]
        else:
            out.append(entry)
    return out


class ReplayLog:
    """Decides, event by event, what a resumed run appends to the stream.

    ``pending`` holds the entries the lost run logged after the checkpoint, in order.
    While the replay matches them one for one nothing is appended; at the first event that
    differs the rest of ``pending`` is voided by a ``superseded`` entry, then every event
    is appended as usual.
    """

    def __init__(self, logged: Iterable[dict[str, Any]] = (), after_step: int = 0):
        logged = list(logged)
        self._logged = logged
        self.pending = [e for e in effective(logged) if "id" in e and e.get("step", 0) > after_step]
        self.after_step = after_step
        self._markers = sum(1 for e in logged if e.get("type") == SUPERSEDED)  # unique marker ids

    def resumed_at(self, step: int) -> "ReplayLog":
        """The same log, for a run that continues from a checkpoint of ``step``."""
        return ReplayLog(self._logged, after_step=step)

    def entries_for(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """What to append for ``event``: nothing (an exact replay), the event, or a
        ``superseded`` entry followed by the event (the replay diverged here)."""
        if not self.pending:
            return [event]
        if plain(event) == self.pending[0]:
            self.pending.pop(0)
            return []
        marker = {
            "type": SUPERSEDED, "step": event.get("step", self.after_step),
            "resumed_from": self.after_step, "ids": [e["id"] for e in self.pending],
            "id": f"{SUPERSEDED}@{event.get('step', self.after_step)}.{self._markers}",
        }
        self.pending = []
        return [marker, event]
