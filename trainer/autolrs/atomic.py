"""Atomic file writes: temp file in the same folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_CREATE_ATTEMPTS = 100


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Write ``path`` through a temp file (``.NAME.*.tmp``) that replaces it on success,
    fsynced; on any error the temp file goes and ``path`` is untouched. The file gets the
    mode a plain ``open(path, "w")`` would give it (0o666 less the umask)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)


def _create_temp(target: Path) -> tuple[int, str]:
    """Create ``.NAME.<random>.tmp`` beside ``target``, exclusively, with mode 0o666.

    Not ``tempfile.mkstemp``: it forces 0o600, so checkpoints and state files on a shared
    volume were unreadable to everyone else. Asking the kernel for 0o666 lets it apply
    the umask (and any default ACL of the folder) itself, which is thread-safe; reading
    the umask in Python needs ``os.umask`` twice, which briefly sets the whole process's
    umask and races with any other thread creating files. ``O_EXCL`` keeps mkstemp's
    guarantees: a fresh file, never an existing one or a symlink's target.
    """
    for _ in range(_CREATE_ATTEMPTS):
        tmp = str(target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name for {target} after {_CREATE_ATTEMPTS} tries")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half."""
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Atomically write ``value`` as JSON (NaN/inf refused: they are not JSON)."""
    atomic_write_bytes(path, json.dumps(value, indent=2, allow_nan=False).encode() + b"\n")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
