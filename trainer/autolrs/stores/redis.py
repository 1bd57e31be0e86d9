"""RedisStore: the state store shared by every pod of a job (redis-py).

Key layout (prefix ``autolrs:{namespace}:{name}:{uid}:``, see ``job_key_prefix``):

- ``<prefix>state``: one JSON value ``{"version": n, "state": {...}}``, written by a Lua
  compare-and-set; a writer whose expected version is not the stored one gets
  StaleWriterError naming both versions.
- ``<prefix>decisions``: a stream; each entry's field ``data`` is the decision's JSON
  (``write_id`` makes a retried append idempotent).
- ``<prefix>heartbeat``: a JSON string with a TTL (``SET PX``).

Outages: the constructor retries a bounded number of times, then raises
StoreUnavailableError naming the URL (password redacted). Once running, a write that
finds Redis gone does not raise into training: it joins an in-memory queue that a
background thread retries with exponential backoff, in order. While writes are queued,
a new state save replaces the queued one (keeping the CAS base of the oldest, so the
stale-writer check still holds) and a new heartbeat replaces the queued one; decisions
are all kept. The queue holds at most ``max_pending`` writes (default 10,000 decisions,
hours of training); beyond that a write raises StoreUnavailableError rather than drop data.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Deque, Mapping
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from autolrs.stores.base import StaleWriterError, StateStore, StoreUnavailableError

log = logging.getLogger(__name__)

JOB_ENV = "AUTOLRS_JOB"
JOB_UID_ENV = "AUTOLRS_JOB_UID"
LOCAL_NAMESPACE, LOCAL_NAME, LOCAL_UID = "default", "local", "0"
DEFAULT_MAX_PENDING = 10_000

# Errors that mean "Redis is not there right now" (BusyLoadingError: replaying its AOF).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)

# KEYS[1] state key; ARGV[1] expected version, ARGV[2] the new document.
# Returns {1, stored_version} on success, {0, stored_version} when stale. A retry of a
# write whose reply was lost finds its own document stored and counts as success.
# KEEPTTL: a save after expire_job_keys() keeps the job's expiry.
_CAS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
  if current == ARGV[2] then return {1, tonumber(ARGV[1])} end
  local v = string.match(current, '^{"version": ?(%d+),')
  if not v then return redis.error_reply('corrupt state value at ' .. KEYS[1]) end
  version = tonumber(v)
end
if version ~= tonumber(ARGV[1]) then return {0, version} end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return {1, version}
"""

# KEYS[1] stream; ARGV[1] write id, ARGV[2] decision JSON. Skips the append when the last
# entry already carries this write id (a retry after a lost reply).
_APPEND_SCRIPT = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'write_id' and fields[i + 1] == ARGV[1] then return 0 end
  end
end
redis.call('XADD', KEYS[1], '*', 'data', ARGV[2], 'write_id', ARGV[1])
return 1
"""


# ---------------------------------------------------------------- pure helpers


def job_key_prefix(namespace: str, name: str, uid: str) -> str:
    """``autolrs:{namespace}:{name}:{uid}:``; each part non-empty, without ':' or spaces."""
    for label, part in (("namespace", namespace), ("name", name), ("uid", uid)):
        if not part or ":" in part or any(ch.isspace() for ch in part):
            raise ValueError(f"job {label} must be non-empty without ':' or spaces, got {part!r}")
    return f"autolrs:{namespace}:{name}:{uid}:"


def job_key_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The key prefix from ``AUTOLRS_JOB`` (namespace/name) and ``AUTOLRS_JOB_UID``.

    Without ``AUTOLRS_JOB`` (a local run) it is ``autolrs:default:local:0:``.
    """
    environ = os.environ if environ is None else environ
    job = environ.get(JOB_ENV, "").strip()
    uid = environ.get(JOB_UID_ENV, "").strip() or LOCAL_UID
    if not job:
        return job_key_prefix(LOCAL_NAMESPACE, LOCAL_NAME, uid)
    namespace, sep, name = job.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"{JOB_ENV} must be 'namespace/name', got {job!r}")
    return job_key_prefix(namespace, name, uid)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def encode_state_document(state_json: str, version: int) -> str:
    """The stored state value; ``version`` comes first so the CAS script can read it."""
    return '{"version": %d, "state": %s}' % (version, state_json)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN/inf float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------- the write queue


@dataclass
class PendingWrite:
    """One write waiting for Redis: a state save, a decision or a heartbeat."""

    kind: str  # "state" | "decision" | "heartbeat"
    payload: str
    base_version: int = 0  # state: the version Redis must still hold (CAS)
    new_version: int = 0  # state: the version this write stores
    deadline: float = 0.0  # heartbeat: monotonic time its TTL runs out
    write_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    in_flight: bool = False


class QueueFullError(RuntimeError):
    """The write queue already holds its maximum number of writes."""


class WriteQueue:
    """Ordered writes waiting for Redis, with coalescing of state saves and heartbeats.

    Pure (no I/O, not thread-safe: the store locks around it). The writer takes the
    oldest write with ``next_write()`` and calls ``done()`` once Redis has it.
    """

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING):
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._writes: Deque[PendingWrite] = collections.deque()

    def __len__(self) -> int:
        return len(self._writes)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._writes))

    def _latest(self, kind: str) -> PendingWrite | None:
        for write in reversed(self._writes):
            if write.kind == kind:
                return write
        return None

    def _append(self, write: PendingWrite) -> None:
        if len(self._writes) >= self.max_pending:
            raise QueueFullError(f"{len(self._writes)} writes already queued")
        self._writes.append(write)

    def add_decision(self, payload: str) -> PendingWrite:
        """Queue a decision append (never coalesced)."""
        write = PendingWrite("decision", payload)
        self._append(write)
        return write

    def add_state(self, state_json: str, expected_version: int) -> PendingWrite:
        """Queue a state save made by a writer that last saw ``expected_version``.

        A queued (not in-flight) save is replaced and the new one moves to the end, so
        the state never lands ahead of the decisions queued before it; it keeps the
        replaced save's CAS base. Raises StaleWriterError when ``expected_version`` is
        not the version this writer's own queued save will store.
        """
        previous = self._latest("state")
        base = expected_version
        if previous is not None:
            if expected_version != previous.new_version:
                raise StaleWriterError(
                    f"stale writer: expected version {expected_version}, but this writer's "
                    f"queued save stores version {previous.new_version}"
                )
            if not previous.in_flight:
                base = previous.base_version
                self._writes.remove(previous)
        write = PendingWrite("state", state_json, base_version=base,
                             new_version=expected_version + 1)
        try:
            self._append(write)
        except QueueFullError:
            if previous is not None and not previous.in_flight:
                self._writes.append(previous)
            raise
        return write

    def add_heartbeat(self, payload: str, deadline: float) -> PendingWrite:
        """Queue a heartbeat; a queued (not in-flight) older one is dropped: only the
        newest heartbeat means anything."""
        previous = self._latest("heartbeat")
        if previous is not None and not previous.in_flight:
            self._writes.remove(previous)
        write = PendingWrite("heartbeat", payload, deadline=deadline)
        self._append(write)
        return write

    def next_write(self) -> PendingWrite | None:
        """The oldest write, marked in flight; None when the queue is empty."""
        if not self._writes:
            return None
        write = self._writes[0]
        write.in_flight = True
        return write

    def done(self, write: PendingWrite) -> None:
        """``write`` reached Redis: remove it."""
        self._writes.remove(write)

    def retry_later(self, write: PendingWrite) -> None:
        """``write`` failed for now: it stays first and may again be coalesced."""
        write.in_flight = False

    def discard_from(self, write: PendingWrite) -> int:
        """Drop ``write`` and everything queued after it; return how many were dropped."""
        index = self._writes.index(write)
        dropped = len(self._writes) - index
        for _ in range(dropped):
            self._writes.pop()
        return dropped


# ---------------------------------------------------------------- the store


class RedisStore(StateStore):
    """Controller state (CAS), decision stream and heartbeat of one job in Redis."""

    def __init__(
        self,
        url: str,
        job_key: str | None = None,
        *,
        connect_attempts: int = 5,
        backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 5.0,
        socket_timeout: float = 5.0,
        max_pending: int = DEFAULT_MAX_PENDING,
        close_timeout: float = 10.0,
        environ: Mapping[str, str] | None = None,
        password: str | None = None,
    ):
        if connect_attempts < 1:
            raise ValueError(f"connect_attempts must be >= 1, got {connect_attempts}")
        self.url = url
        self.safe_url = redact_url(url)
        prefix = job_key if job_key is not None else job_key_from_env(environ)
        self.key_prefix = prefix if prefix.endswith(":") else prefix + ":"
        self.state_key = self.key_prefix + "state"
        self.decisions_key = self.key_prefix + "decisions"
        self.heartbeat_key = self.key_prefix + "heartbeat"
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.close_timeout = close_timeout
        # A password given apart from the URL (raw, so any character works) counts only
        # where the URL has none: redis-py lets the URL's own override it.
        extra = {"password": password} if password else {}
        try:
            self._client = redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 0), health_check_interval=0, **extra,
            )
        except ValueError as exc:
            raise ValueError(f"bad Redis URL {self.safe_url}: {_one_line(exc)}") from None
        self._cas = self._client.register_script(_CAS_SCRIPT)
        self._append = self._client.register_script(_APPEND_SCRIPT)

        self._queue = WriteQueue(max_pending)
        self._lock = threading.Condition()
        self._kick = threading.Event()
        self._deferred_error: StaleWriterError | None = None
        self._writer: threading.Thread | None = None
        self._closed = False
        self._outage_logged = False
        self._connect(connect_attempts)

    # ------------------------------------------------------------ connection

    def _connect(self, attempts: int) -> None:
        started = time.monotonic()
        delay = self.backoff_seconds
        for attempt in range(1, attempts + 1):
            try:
                self._client.ping()
                return
            except redis.exceptions.AuthenticationError as exc:
                raise StoreUnavailableError(
                    f"Redis at {self.safe_url} refused the credentials: {_one_line(exc)}"
                ) from None
            except (*OUTAGE_ERRORS, redis.exceptions.ResponseError) as exc:
                if attempt == attempts:
                    raise StoreUnavailableError(
                        f"Redis at {self.safe_url} unreachable after {attempts} attempts "
                        f"over {time.monotonic() - started:.1f} s: {_one_line(exc)}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_seconds)

    # ------------------------------------------------------------ reads

    def load_state(self) -> tuple[int, dict[str, Any] | None]:
        """``(version, state)`` as stored (pending writes are flushed first)."""
        raw = self._read(lambda: self._client.get(self.state_key), "read the state")
        if raw is None:
            return 0, None
        try:
            doc = json.loads(raw)
            return int(doc["version"]), doc["state"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"corrupt state value at Redis key {self.state_key}: {exc}") from None

    def decisions(self) -> list[dict[str, Any]]:
        """Every decision in the stream, oldest first (pending writes are flushed first)."""
        out: list[dict[str, Any]] = []
        start = "-"
        while True:
            entries = self._read(
                lambda: self._client.xrange(self.decisions_key, min=start, max="+", count=1000),
                "read the decisions",
            )
            for _, fields in entries:
                out.append(json.loads(fields[b"data"]))
            if len(entries) < 1000:
                return out
            start = "(" + entries[-1][0].decode()

    def read_heartbeat(self) -> dict[str, Any] | None:
        """The last heartbeat, or None when none was written or its TTL ran out."""
        raw = self._read(lambda: self._client.get(self.heartbeat_key), "read the heartbeat")
        return None if raw is None else json.loads(raw)

    def _read(self, fetch, what: str):  # type: ignore[no-untyped-def]
        if self.pending_writes:
            self.flush(timeout=self.close_timeout)
        try:
            return fetch()
        except OUTAGE_ERRORS as exc:
            raise StoreUnavailableError(
                f"cannot {what} from Redis at {self.safe_url}: {_one_line(exc)}"
            ) from None

    # ------------------------------------------------------------ writes

    def save_state(self, state: dict[str, Any], expected_version: int) -> int:
        """CAS-write ``state``; returns the new version (queued while Redis is down)."""
        state_json = json.dumps(state, allow_nan=False)
        with self._lock:
            self._raise_deferred()
            if self._queue or self._closed:
                return self._enqueue(lambda: self._queue.add_state(state_json, expected_version)
                                     ).new_version
            write = PendingWrite("state", state_json, base_version=expected_version,
                                 new_version=expected_version + 1)
            try:
                self._write(write)
            except OUTAGE_ERRORS as exc:
                self._note_outage(exc)
                return self._enqueue(
                    lambda: self._queue.add_state(state_json, expected_version)).new_version
            return write.new_version

    def append_decision(self, decision: dict[str, Any]) -> None:
        """Append ``decision`` to the stream (queued, in order, while Redis is down)."""
        payload = json.dumps(decision, allow_nan=False)
        self._write_or_queue(lambda: self._queue.add_decision(payload),
                             PendingWrite("decision", payload))

    def heartbeat(self, info: dict[str, Any], ttl_seconds: float) -> None:
        """Set the heartbeat with a TTL (while Redis is down, the newest one waits).

        It is a status view: NaN/inf numbers in ``info`` are stored as null.
        """
        if not ttl_seconds > 0:
            raise ValueError(f"heartbeat ttl_seconds must be > 0, got {ttl_seconds}")
        payload = json.dumps(finite_or_none(info), allow_nan=False)
        deadline = time.monotonic() + ttl_seconds
        self._write_or_queue(lambda: self._queue.add_heartbeat(payload, deadline),
                             PendingWrite("heartbeat", payload, deadline=deadline))

    def _write_or_queue(self, enqueue, write: PendingWrite) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self._raise_deferred()
            if self._queue or self._closed:
                self._enqueue(enqueue)
                return
            try:
                self._write(write)
            except OUTAGE_ERRORS as exc:
                self._note_outage(exc)
                self._enqueue(enqueue)

    def _enqueue(self, add) -> PendingWrite:  # type: ignore[no-untyped-def]
        """Run ``add`` on the queue (lock held) and make sure the writer thread runs."""
        if self._closed:
            raise StoreUnavailableError(f"RedisStore for {self.safe_url} is closed")
        try:
            write = add()
        except QueueFullError:
            raise StoreUnavailableError(
                f"Redis at {self.safe_url} unreachable for too long: {len(self._queue)} writes "
                f"queued (max_pending={self._queue.max_pending})"
            ) from None
        if self._writer is None:
            self._writer = threading.Thread(target=self._drain_forever, daemon=True,
                                            name=f"redis-store-writer {self.key_prefix}")
            self._writer.start()
        self._lock.notify_all()
        return write

    def _write(self, write: PendingWrite) -> None:
        """Send one write to Redis; raises OUTAGE_ERRORS, or StaleWriterError for a lost CAS."""
        if write.kind == "state":
            document = encode_state_document(write.payload, write.new_version)
            ok, stored = self._cas(keys=[self.state_key],
                                   args=[write.base_version, document])
            if not ok:
                raise StaleWriterError(
                    f"stale writer: Redis key {self.state_key} holds version {stored}, "
                    f"this writer expected version {write.base_version}"
                )
        elif write.kind == "decision":
            self._append(keys=[self.decisions_key], args=[write.write_id, write.payload])
        else:
            remaining_ms = int((write.deadline - time.monotonic()) * 1000)
            if remaining_ms > 0:  # an expired heartbeat would be gone by now anyway
                self._client.set(self.heartbeat_key, write.payload, px=remaining_ms)

    def _note_outage(self, exc: BaseException) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            log.warning("Redis at %s unreachable (%s); queueing writes and retrying",
                        self.safe_url, _one_line(exc))

    def _raise_deferred(self) -> None:
        if self._deferred_error is not None:
            error, self._deferred_error = self._deferred_error, None
            raise error

    # ------------------------------------------------------------ the writer thread

    def _drain_forever(self) -> None:
        delay = self.backoff_seconds
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                write = self._queue.next_write()
            assert write is not None
            try:
                self._write(write)
            except OUTAGE_ERRORS as exc:
                with self._lock:
                    self._queue.retry_later(write)
                    if self._closed:
                        return
                self._note_outage(exc)
                self._kick.wait(delay)
                self._kick.clear()
                delay = min(delay * 2, self.max_backoff_seconds)
                continue
            except StaleWriterError as exc:
                with self._lock:
                    dropped = self._queue.discard_from(write)
                    self._deferred_error = exc
                    self._lock.notify_all()
                log.error("%s; %d queued writes from this writer not written", exc, dropped)
                continue
            except redis.exceptions.RedisError as exc:
                with self._lock:
                    self._queue.retry_later(write)
                log.error("Redis at %s refused a queued %s write (%s); retrying",
                          self.safe_url, write.kind, _one_line(exc))
                self._kick.wait(delay)
                self._kick.clear()
                delay = min(delay * 2, self.max_backoff_seconds)
                continue
            with self._lock:
                self._queue.done(write)
                delay = self.backoff_seconds
                if not self._queue:
                    if self._outage_logged:
                        log.warning("Redis at %s is back; queued writes flushed", self.safe_url)
                    self._outage_logged = False
                self._lock.notify_all()

    # ------------------------------------------------------------ control

    @property
    def pending_writes(self) -> int:
        """How many writes wait for Redis (0 when everything has landed)."""
        with self._lock:
            return len(self._queue)

    def flush(self, timeout: float = 30.0) -> None:
        """Retry queued writes now and wait until all landed.

        Raises StoreUnavailableError when some are still pending after ``timeout`` seconds,
        and StaleWriterError when a queued state save lost its compare-and-set.
        """
        deadline = time.monotonic() + timeout
        self._kick.set()
        with self._lock:
            while self._queue and self._deferred_error is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreUnavailableError(
                        f"Redis at {self.safe_url} unreachable: {len(self._queue)} writes "
                        f"still queued after {timeout:.1f} s"
                    )
                self._lock.wait(min(remaining, 0.5))
                self._kick.set()
            self._raise_deferred()

    def expire_job_keys(self, ttl_seconds: float) -> int:
        """Flush, then make every key under this job's prefix expire in ``ttl_seconds``.

        Returns how many keys got the expiry. Later state saves keep it (SET KEEPTTL).
        """
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        self.flush(timeout=self.close_timeout)
        pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.key_prefix) + "*"
        try:
            keys = list(self._client.scan_iter(match=pattern, count=1000))
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.pexpire(key, int(ttl_seconds * 1000))
            return sum(bool(ok) for ok in pipe.execute())
        except OUTAGE_ERRORS as exc:
            raise StoreUnavailableError(
                f"cannot set expiry on job keys in Redis at {self.safe_url}: {_one_line(exc)}"
            ) from None

    def close(self) -> None:
        """Flush (up to ``close_timeout`` s), stop the writer thread, release connections.

        Writes still queued after that are reported by an ERROR log line with their count.
        """
        if self._closed:
            return
        try:
            self.flush(timeout=self.close_timeout)
        except (StoreUnavailableError, StaleWriterError) as exc:
            log.error("closing RedisStore with %d writes not written: %s",
                      self.pending_writes, exc)
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._kick.set()
        if self._writer is not None:
            self._writer.join(timeout=self.close_timeout)
        self._client.close()
