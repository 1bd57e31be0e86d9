"""Status conditions (type/status/reason/message/lastTransitionTime), updated purely."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

CREATED = "Created"
RUNNING = "Running"
RESTARTING = "Restarting"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
ORDER = (CREATED, RUNNING, RESTARTING, SUSPENDED, SUCCEEDED, FAILED)


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with condition ``type_`` set; its transition time moves only when status flips."""
    value = "True" if status else "False"
    out: list[dict[str, Any]] = []
    found = False
    for condition in conditions:
        current = dict(condition)
        if current.get("type") == type_:
            found = True
            if current.get("status") != value:
                current["lastTransitionTime"] = now
            current.update(status=value, reason=reason, message=message)
        out.append(current)
    if not found:
        out.append(
            {"type": type_, "status": value, "reason": reason, "message": message,
             "lastTransitionTime": now}
        )
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(out, key=lambda c: rank.get(c.get("type", ""), len(ORDER)))


def clear_condition(
    conditions: Iterable[Mapping[str, Any]], type_: str, reason: str, message: str, now: str
) -> list[dict[str, Any]]:
    """Set ``type_`` to False if it is present and True; absent conditions stay absent."""
    conditions = list(conditions)
    current = find(conditions, type_)
    if current is None or current.get("status") != "True":
        return [dict(c) for c in conditions]
    return set_condition(conditions, type_, False, reason, message, now)


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    """The condition of type ``type_``, or None."""
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Iterable[Mapping[str, Any]], type_: str) -> bool:
    """Whether condition ``type_`` is present with status True."""
    condition = find(conditions, type_)
    return condition is not None and condition.get("status") == "True"
