"""FileStore: the embedded state store (a run folder on local or shared disk)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from autolrs.atomic import atomic_write_json
from autolrs.stores.base import StaleWriterError, StateStore

log = logging.getLogger(__name__)


class FileStore(StateStore):
    """State in ``state.json`` (atomic write-then-rename, CAS under a lock file),
    decisions in ``decisions.jsonl`` (fsynced appends; a line torn by a crash is skipped,
    never the ones after it), heartbeat in ``heartbeat.json``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._state_path = self.root / "state.json"
        self._decisions_path = self.root / "decisions.jsonl"
        self._heartbeat_path = self.root / "heartbeat.json"
        self._lock_path = self.root / ".lock"
        self._reported_bad_lines: set[int] = set()  # warned about once per store

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
        line = (json.dumps(decision, allow_nan=False) + "\n").encode()
        with self._locked(), open(self._decisions_path, "ab+") as handle:
            # A crash mid-append leaves a last line without its newline. Start a fresh
            # line rather than truncate that tail: the tail may be a whole decision that
            # lost only its newline, and a torn fragment costs nothing once it sits on a
            # line of its own (the reader skips it), while cutting bytes can lose data.
            if handle.seek(0, os.SEEK_END) > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def decisions(self) -> list[dict[str, Any]]:
        """Every decision in log order; an unreadable line (a torn append after a crash)
        is skipped with a warning naming it, once per store, and reading goes on."""
        try:
            data = self._decisions_path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        bad = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                decision = json.loads(raw)
            except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
                decision = None
            if isinstance(decision, dict):
                out.append(decision)
            else:
                bad.append(number)
        self._report_bad_lines(bad)
        return out

    def _report_bad_lines(self, numbers: list[int]) -> None:
        """Warn (log and RuntimeWarning) about the bad line numbers not yet reported."""
        new = [number for number in numbers if number not in self._reported_bad_lines]
        if not new:
            return
        self._reported_bad_lines.update(new)
        lines = ", ".join(str(number) for number in new)
        message = (f"skipping unreadable line(s) {lines} of {self._decisions_path} "
                   "(torn by a crash mid-append?)")
        log.warning("%s", message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

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
