"""FileStore: the embedded state store (a run folder on local or shared disk)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from autolrs.atomic import atomic_write_json
from autolrs.stores.base import StaleWriterError, StateStore


class FileStore(StateStore):
    """State in ``state.json`` (atomic write-then-rename, CAS under a lock file),
    decisions in ``decisions.jsonl`` (fsynced appends), heartbeat in ``heartbeat.json``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._state_path = self.root / "state.json"
        self._decisions_path = self.root / "decisions.jsonl"
        self._heartbeat_path = self.root / "heartbeat.json"
        self._lock_path = self.root / ".lock"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load_state(self) -> tuple[int, dict[str, Any] | None]:
        if not self._state_path.exists():
            return 0, None
        try:
            doc = json.loads(self._state_path.read_text())
            return int(doc["version"]), doc["state"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"corrupt state file {self._state_path}: {exc}") from None

    def save_state(self, state: dict[str, Any], expected_version: int) -> int:
        with self._locked():
            current, _ = self.load_state()
            if current != expected_version:
                raise StaleWriterError(
                    f"stale writer: {self._state_path} is at version {current}, "
                    f"this writer expected {expected_version}"
                )
            atomic_write_json(self._state_path, {"version": current + 1, "state": state})
            return current + 1

    def append_decision(self, decision: dict[str, Any]) -> None:
        line = json.dumps(decision, allow_nan=False) + "\n"
        with self._locked(), open(self._decisions_path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def decisions(self) -> list[dict[str, Any]]:
        if not self._decisions_path.exists():
            return []
        out = []
        for line in self._decisions_path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line after a crash: everything before it stands
        return out

    def heartbeat(self, info: dict[str, Any], ttl_seconds: float) -> None:
        atomic_write_json(self._heartbeat_path, {"expires": time.time() + ttl_seconds, **info})

    def read_heartbeat(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self._heartbeat_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if doc.pop("expires", 0) < time.time():
            return None
        return doc
