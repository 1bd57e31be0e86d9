"""Redis write latency per AutoLRS decision (RedisStore: decision append, CAS state save,
heartbeat) against a loopback PING, on a redis-server started here on a free port."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterator

from bench.timing import summary_ms


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """An ephemeral redis-server on loopback; yields its URL and stops it afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not found: run `make system-deps`")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_port(port, process)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"redis-server did not listen on port {port} within {timeout}s")


def redis_cost(state: dict[str, Any], decision: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Median latency of one decision's writes through RedisStore vs a loopback PING."""
    import redis

    from autolrs.stores.redis import RedisStore, job_key_prefix

    with redis_server() as url:
        client = redis.Redis.from_url(url)
        ping = []
        for _ in range(repeats * 5):
            start = time.perf_counter()
            client.ping()
            ping.append(time.perf_counter() - start)
        store = RedisStore(url, job_key=job_key_prefix("bench", "cost", "0"))
        version = store.load_state()[0]
        heartbeat = {"step": 1, "stage": 1, "tau": 200, "lr": 0.1, "phase": "search"}
        per_decision, save_only = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            store.append_decision(decision)
            version = store.save_state(state, version)
            store.heartbeat(heartbeat, 60.0)
            per_decision.append(time.perf_counter() - start)
            start = time.perf_counter()
            version = store.save_state(state, version)
            save_only.append(time.perf_counter() - start)
        store.close()
        client.close()
    ping_ms, decision_ms = summary_ms(ping), summary_ms(per_decision)
    return {
        "store": "autolrs.stores.redis.RedisStore",
        "state_json_bytes": len(json.dumps(state)),
        "ping": ping_ms, "per_decision": decision_ms, "save_state_only": summary_ms(save_only),
        "ratio_to_ping": decision_ms["median_ms"] / ping_ms["median_ms"],
        "note": "per decision = append_decision + compare-and-set save_state + heartbeat, "
                "what AutoLRS writes at each trial end / decision",
    }
