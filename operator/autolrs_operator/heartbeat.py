"""Read the trainer's progress from Redis (heartbeat + stage decisions); expire a job's keys.

Keys (under the job's prefix ``autolrs:{namespace}:{name}:{uid}:``): ``heartbeat`` is a JSON
object with a TTL (step, stage, tau, lr, best_predicted_loss, last_checkpoint_step, phase);
``decisions`` is a stream of the controller's events, each JSON in the field ``data`` with a
``type``: ``decision`` entries (stage, lr, tau, predicted_loss) become the job's StageDecision
Events and ``rollback`` entries (stage, lr, step, reason) Warning Events; the others (trial
ends, range test, stage ends, ``superseded`` after a resume) stay in the stream for tools. The reader is written against that
contract, not the trainer's code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import redis

HEARTBEAT_KEY = "heartbeat"
DECISIONS_KEY = "decisions"
_STATUS_FIELDS = {
    "step": ("step", int),
    "stage": ("stage", int),
    "tau": ("tau", int),
    "lr": ("learningRate", float),
    "best_predicted_loss": ("bestPredictedLoss", float),
    "last_checkpoint_step": ("lastCheckpointStep", int),
}


@dataclass(frozen=True)
class Decision:
    """One entry of the trainer's stream (``kind`` is its ``type``: decision, rollback, ...)."""

    id: str
    kind: str | None
    stage: int | None
    lr: float | None
    tau: int | None
    predicted_loss: float | None
    step: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Progress:
    """The heartbeat (None when absent or expired) and decisions after a given stream id."""

    heartbeat: dict[str, Any] | None
    decisions: list[Decision]


def connect(url: str) -> redis.Redis:
    """A Redis client with short timeouts (the status timer must not hang)."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=3.0, socket_connect_timeout=3.0
    )


def read_progress(
    client: redis.Redis, prefix: str, after_id: str | None, limit: int = 100
) -> Progress:
    """Read the heartbeat and up to ``limit`` decisions newer than ``after_id``."""
    raw = client.get(prefix + HEARTBEAT_KEY)
    heartbeat = None
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = None
        heartbeat = parsed if isinstance(parsed, dict) else None
    start = f"({after_id}" if after_id else "-"
    entries = client.xrange(prefix + DECISIONS_KEY, min=start, max="+", count=limit)
    return Progress(heartbeat=heartbeat, decisions=[parse_entry(i, f) for i, f in entries])


def status_from_heartbeat(heartbeat: Mapping[str, Any]) -> dict[str, Any]:
    """The job status fields a heartbeat fills (missing or non-finite values are left out)."""
    status: dict[str, Any] = {}
    for key, (field, kind) in _STATUS_FIELDS.items():
        value = _number(heartbeat.get(key), kind)
        if value is not None:
            status[field] = value
    if isinstance(heartbeat.get("phase"), str):
        status["trainerPhase"] = heartbeat["phase"]
    return status


def job_event(decision: Decision) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Kubernetes Event a stream entry makes, or None for none.

    One StageDecision per stage decision and a Warning per rollback; trial ends, the range
    test and stage ends are too many (a dozen a stage) to post.
    """
    if decision.kind == "decision":
        return "Normal", "StageDecision", decision_message(decision)
    if decision.kind == "rollback":
        return "Warning", "StageRolledBack", rollback_message(decision)
    return None


def rollback_message(decision: Decision) -> str:
    """E.g. ``stage 2: lr=0.5 diverged at step 1200; back to the stage snapshot``."""
    why = decision.reason or "diverged"
    at = f" at step {decision.step}" if decision.step is not None else ""
    return f"stage {decision.stage}: lr={_short(decision.lr)} {why}{at}; back to the stage snapshot"


def decision_message(decision: Decision) -> str:
    """One line for the job's Event, e.g. ``stage 2: lr=0.05 for 2000 steps (predicted loss 0.31)``."""
    parts = [f"stage {decision.stage}: lr={_short(decision.lr)}"]
    if decision.tau is not None:
        parts.append(f"for {decision.tau} steps")
    if decision.predicted_loss is not None:
        parts.append(f"(predicted loss {_short(decision.predicted_loss)})")
    return " ".join(parts)


def expire_job_keys(client: redis.Redis, prefix: str, seconds: int) -> int:
    """Give every key under ``prefix`` a TTL of ``seconds``; return how many keys there were."""
    pattern = _glob_escape(prefix) + "*"
    count = 0
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match=pattern, count=500):
        pipe.expire(key, seconds)
        count += 1
    if count:
        pipe.execute()
    return count


def parse_entry(entry_id: str, fields: Mapping[str, str]) -> Decision:
    """One stream entry (its JSON in the field ``data``); malformed values read as None."""
    try:
        data = json.loads(fields.get("data", "{}"))
    except json.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    kind = data.get("type")
    reason = data.get("reason")
    return Decision(
        id=entry_id,
        kind=kind if isinstance(kind, str) else None,
        stage=_number(data.get("stage"), int),
        lr=_number(data.get("lr"), float),
        tau=_number(data.get("tau"), int),
        predicted_loss=_number(data.get("predicted_loss"), float),
        step=_number(data.get("step"), int),
        reason=reason if isinstance(reason, str) else None,
    )


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    return kind(value)


def _short(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
