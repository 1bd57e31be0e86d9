"""CheckpointManager: durable, checksummed checkpoints written off the training thread.

Layout of the checkpoint folder (``AUTOLRS_CHECKPOINT_DIR``)::

    ckpt-000001234.pt          torch.save of {"format": 1, "step": 1234, "payload": {...}}
    ckpt-000001234.pt.sha256   "<sha256 hex>  ckpt-000001234.pt\\n" (``sha256sum -c`` format)

A save copies every tensor of the payload to host memory on the calling thread (the only
stall of the training loop), then one background thread writes ``.ckpt-*.tmp``, fsyncs
it, writes the checksum file atomically, renames the data file into place and fsyncs the
folder. The rename is the commit: a ``ckpt-*.pt`` name exists only once its data and
checksum are durable, so a writer killed at any moment leaves either the previous set of
checkpoints or the new one, plus stray temp files that the next writer removes before
its first write (and that loading ignores). Only one process (rank 0) should save.
At most one write is in flight: a save called during a write waits for it to finish (so
host memory holds one copy and every requested checkpoint lands). Only the newest
``keep_last`` checkpoints (by step; the one just written always among them) are kept.
``load_latest`` verifies the checksum and skips, with a warning naming the file, any
checkpoint that is truncated, corrupt or unreadable.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from autolrs.atomic import atomic_open, atomic_write_bytes, fsync_dir

log = logging.getLogger(__name__)

CHECKPOINT_DIR_ENV = "AUTOLRS_CHECKPOINT_DIR"
CHECKPOINT_FORMAT = 1
STEP_DIGITS = 9
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
_CHUNK = 1 << 20


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint of ``step`` (names sort by step)."""
    return f"ckpt-{step:0{STEP_DIGITS}d}.pt"


def checksum_name(step: int) -> str:
    """The name of the checksum file beside the checkpoint of ``step``."""
    return checkpoint_name(step) + ".sha256"


def to_host(obj: Any, _memo: dict[int, Any] | None = None) -> Any:
    """A deep copy of ``obj`` with every tensor copied to CPU memory (detached).

    Dicts (OrderedDict too), lists, tuples and named tuples are rebuilt; a tensor
    referenced twice is copied once; other values are deep-copied.
    """
    memo: dict[int, Any] = {} if _memo is None else _memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, torch.Tensor):
        out: Any = obj.detach().to("cpu", copy=True)
    elif isinstance(obj, dict):
        items = [(key, to_host(value, memo)) for key, value in obj.items()]
        try:
            out = type(obj)(items)
        except TypeError:  # a dict subclass with another constructor (defaultdict, ...)
            out = dict(items)
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        out = type(obj)(*(to_host(value, memo) for value in obj))
    elif isinstance(obj, (list, tuple)):
        out = type(obj)(to_host(value, memo) for value in obj)
    else:
        out = copy.deepcopy(obj)
    memo[id(obj)] = out
    return out


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _os_reason(exc: OSError) -> str:
    """An OSError as a short reason without the path ("Is a directory")."""
    return exc.strerror or str(exc)


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through it."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


class CheckpointError(RuntimeError):
    """A background checkpoint write failed (raised by the next save/wait/close)."""


class CheckpointManager:
    """Save checkpoints in the background, keep the last ``keep_last``, load the newest valid."""

    def __init__(self, directory: str | os.PathLike[str], keep_last: int = 3,
                 on_written: Callable[[int, float], None] | None = None):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.on_written = on_written
        self.last_save_seconds: float | None = None
        self.last_write_seconds: float | None = None
        self.last_written_step: int | None = None
        self._cond = threading.Condition()
        self._pending: tuple[int, Any] | None = None
        self._error: CheckpointError | None = None
        self._closed = False
        self._writer: threading.Thread | None = None

    # ------------------------------------------------------------ saving

    def save(self, step: int, payload: dict[str, Any]) -> float:
        """Checkpoint ``payload`` as ``step``; returns the seconds the caller stalled.

        Waits for a write in flight, copies the tensors to host memory and hands the copy
        to the writer thread. Raises CheckpointError if the previous write failed.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"checkpoint step must be an integer >= 0, got {step!r}")
        started = time.perf_counter()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"CheckpointManager for {self.directory} is closed")
            while self._pending is not None:
                self._cond.wait()
            self._raise_error()
        host_payload = to_host(payload)
        with self._cond:
            self._pending = (step, host_payload)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, daemon=True,
                                                name=f"checkpoint-writer {self.directory}")
                self._writer.start()
            self._cond.notify_all()
        self.last_save_seconds = time.perf_counter() - started
        return self.last_save_seconds

    def wait(self, timeout: float | None = None) -> None:
        """Block until the write in flight (if any) is durable; raise if it failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"checkpoint of step {self._pending[0]} not written after {timeout} s")
                self._cond.wait(remaining)
            self._raise_error()

    def close(self) -> None:
        """Wait for the write in flight, then stop the writer thread."""
        if self._closed:
            return
        try:
            self.wait()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._writer is not None:
                self._writer.join()

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write_forever(self) -> None:
        try:
            self.remove_stray_files()
        except OSError as exc:
            log.warning("cannot remove stray checkpoint files in %s: %s", self.directory, exc)
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                step, payload = self._pending
            started = time.perf_counter()
            try:
                self._write(step, payload)
                self._prune(keep_step=step)
            except Exception as exc:  # reported to the training thread, never swallowed
                error = CheckpointError(
                    f"checkpoint of step {step} to {self.directory} failed: {exc}")
                log.error("%s", error)
                with self._cond:
                    self._error = error
                    self._pending = None
                    self._cond.notify_all()
                continue
            seconds = time.perf_counter() - started
            self.last_write_seconds = seconds
            self.last_written_step = step
            if self.on_written is not None:
                try:
                    self.on_written(step, seconds)
                except Exception:
                    log.exception("on_written callback failed for checkpoint step %d", step)
            with self._cond:
                self._pending = None
                self._cond.notify_all()

    def _write(self, step: int, payload: Any) -> None:
        final = self.directory / checkpoint_name(step)
        with atomic_open(final) as handle:
            writer = _HashingWriter(handle)
            torch.save({"format": CHECKPOINT_FORMAT, "step": step, "payload": payload}, writer)
            if final.exists():  # re-saving a step: never pair new checksum with old data
                final.unlink()
            # The checksum lands first; the data file's rename (leaving the block) commits.
            atomic_write_bytes(self.directory / checksum_name(step),
                               f"{writer.digest.hexdigest()}  {final.name}\n".encode())

    def _prune(self, keep_step: int) -> None:
        steps = self.steps()
        keep = set(steps[-self.keep_last:]) | {keep_step}
        if len(keep) > self.keep_last:  # the one just written beats the oldest kept
            keep.discard(min(keep - {keep_step}))
        for step in steps:
            if step not in keep:
                for name in (checkpoint_name(step), checksum_name(step)):
                    try:
                        (self.directory / name).unlink()
                    except FileNotFoundError:
                        pass
        fsync_dir(self.directory)

    # ------------------------------------------------------------ reading

    def steps(self) -> list[int]:
        """Steps of the committed checkpoint files, ascending (not verified)."""
        out = []
        for entry in os.listdir(self.directory):
            match = _NAME.match(entry)
            if match:
                out.append(int(match.group(1)))
        return sorted(out)

    def latest_step(self) -> int | None:
        """The newest committed checkpoint's step (not verified), or None."""
        steps = self.steps()
        return steps[-1] if steps else None

    def verify(self, step: int) -> str | None:
        """Why the checkpoint of ``step`` is not valid (a one-line reason), or None if its
        checksum file is present and matches. Never raises for a bad file (a folder in
        its place, unreadable bytes): that is a reason too."""
        path = self.directory / checkpoint_name(step)
        try:
            recorded = (self.directory / checksum_name(step)).read_bytes().decode().split()
        except FileNotFoundError:
            return f"no checksum file {checksum_name(step)} (write interrupted?)"
        except UnicodeDecodeError:
            return f"malformed checksum file {checksum_name(step)} (not UTF-8)"
        except OSError as exc:
            return f"unreadable checksum file {checksum_name(step)}: {_os_reason(exc)}"
        if len(recorded) != 2 or recorded[1] != path.name or len(recorded[0]) != 64:
            return f"malformed checksum file {checksum_name(step)}"
        try:
            actual = file_sha256(path)
        except FileNotFoundError:
            return "file vanished"
        except OSError as exc:
            return f"unreadable: {_os_reason(exc)}"
        if actual != recorded[0]:
            return f"sha256 mismatch (expected {recorded[0][:12]}..., got {actual[:12]}...)"
        return None

    def load_latest(self, map_location: Any = "cpu",
                    weights_only: bool = False) -> tuple[int, dict[str, Any]] | None:
        """``(step, payload)`` of the newest valid checkpoint, or None if there is none.

        Invalid ones (no or wrong checksum, unreadable, wrong format) are skipped with a
        warning naming the file. ``weights_only=False`` by default: the payload may hold
        RNG states and plain Python objects; the checksum guards integrity, not trust.
        """
        for step in reversed(self.steps()):
            path = self.directory / checkpoint_name(step)
            reason = self.verify(step)
            if reason is None:
                try:
                    doc = torch.load(path, map_location=map_location, weights_only=weights_only)
                except Exception as exc:
                    reason = f"unreadable: {' '.join(str(exc).split())[:200]}"
                else:
                    if (not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT
                            or doc.get("step") != step or "payload" not in doc):
                        reason = f"not an AutoLRS checkpoint of format {CHECKPOINT_FORMAT}"
                    else:
                        return step, doc["payload"]
            message = f"skipping invalid checkpoint {path}: {reason}"
            log.warning("%s", message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return None

    def remove_stray_files(self) -> int:
        """Delete temp files of interrupted writes and checksum files without data;
        returns how many were removed. The writer thread calls it before its first write,
        so managers that only load (other ranks) never touch the folder."""
        removed = 0
        entries = set(os.listdir(self.directory))
        for entry in entries:
            stray = entry.startswith(".ckpt-") and entry.endswith(".tmp")
            if entry.startswith("ckpt-") and entry.endswith(".pt.sha256"):
                stray = entry[: -len(".sha256")] not in entries
            if stray:
                try:
                    (self.directory / entry).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed
