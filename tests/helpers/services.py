"""Real services for tests: redis-server and Prometheus on free loopback ports.

Each helper starts the Debian binary in a temporary folder, waits (with a timeout) until it
answers, and stops it on exit. Use them as context managers anywhere::

    from tests.helpers.services import redis_server, prometheus_server

    with redis_server(appendonly=True) as redis:
        ...  # redis.url, redis.port; redis.stop(); redis.start() restarts on the same port
    with prometheus_server(["127.0.0.1:9100"]) as prom:
        prom.wait_for("up == 1")       # polls /api/v1/query until a result appears

or through the pytest fixtures ``redis_service``, ``redis_service_factory`` and
``prometheus_service_factory`` registered by ``tests/integration/runtime/conftest.py``.
A missing binary is reported by a one-line RuntimeError naming the Debian package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str, package: str) -> str:
    """The absolute path of ``name``, or a RuntimeError saying which package installs it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} not found on PATH: install the Debian package {package!r} "
            "(make system-deps)"
        )
    return path


def _stop_process(proc: subprocess.Popen[bytes], kill: bool, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)



def last_log_line(path: Path) -> str:
    """The last line of a service's log, for error messages."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"

class RedisServer:
    """A redis-server on 127.0.0.1 with its data in ``directory``; ``stop()``/``start()``
    keep the port and the folder, so with ``appendonly`` the data survives a restart."""

    def __init__(self, directory: str | os.PathLike[str], appendonly: bool = False,
                 port: int | None = None, password: str | None = None):
        self.binary = require_binary("redis-server", "redis-server")
        self.directory = Path(directory)
        self.appendonly = appendonly
        self.password = password
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.directory / "redis.log"

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start (or restart) the server and wait until it answers PING with PONG."""
        if self.running:
            return
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always", "--daemonize", "no", "--logfile", str(self._log_path),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {self._proc.returncode}: "
                    f"{self._log_tail()}"
                )
            if self._pong():
                return
            time.sleep(0.05)
        self.stop(kill=True)
        raise RuntimeError(f"redis-server on port {self.port} not ready after {timeout:.0f} s")

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (clean shutdown) or, with ``kill``, SIGKILL (a crash)."""
        if self._proc is not None:
            _stop_process(self._proc, kill)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                if self.password:
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    sock.recv(64)
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        return last_log_line(self._log_path)


@contextmanager
def redis_server(appendonly: bool = False, password: str | None = None,
                 directory: str | os.PathLike[str] | None = None) -> Iterator[RedisServer]:
    """A running RedisServer for the ``with`` block; stopped (and its temp dir removed) after."""
    with tempfile.TemporaryDirectory(prefix="redis-test-") as tmp:
        server = RedisServer(directory or tmp, appendonly=appendonly, password=password)
        last_error: RuntimeError | None = None
        for _ in range(3):  # the free port may be taken between choosing and binding
            try:
                server.start()
                break
            except RuntimeError as exc:
                last_error = exc
                server.port = free_port()
        else:
            raise last_error  # type: ignore[misc]
        try:
            yield server
        finally:
            server.stop()


class PrometheusServer:
    """A Prometheus server scraping ``scrape_targets`` every second, with query helpers."""

    def __init__(self, directory: str | os.PathLike[str], scrape_targets: Sequence[str],
                 scrape_interval: str = "1s"):
        self.binary = require_binary("prometheus", "prometheus")
        self.directory = Path(directory)
        self.port = free_port()
        self.scrape_targets = list(scrape_targets)
        self.scrape_interval = scrape_interval
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.directory / "prometheus.log"

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """The prometheus.yml written at start (JSON is valid YAML).

        ``honor_labels`` keeps the targets' own ``job``/``namespace`` labels, as the
        chart's ServiceMonitor does.
        """
        return {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": "test",
                "honor_labels": True,
                "static_configs": [{"targets": self.scrape_targets}],
            }],
        }

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the server and wait until ``/-/ready`` answers 200."""
        config_path = self.directory / "prometheus.yml"
        config_path.write_text(json.dumps(self.config()))
        log = open(self._log_path, "wb")
        self._proc = subprocess.Popen(
            [self.binary, f"--config.file={config_path}",
             f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self._proc.returncode}: {self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus on port {self.port} not ready after {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        if self._proc is not None:
            _stop_process(self._proc, kill=False)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """One instant query through ``/api/v1/query``: the ``data.result`` list."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5.0) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query {expr!r} failed: {body}")
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 20.0,
                 predicate: Callable[[list[dict[str, Any]]], bool] = bool,
                 interval: float = 0.25) -> list[dict[str, Any]]:
        """Poll ``query(expr)`` until ``predicate(result)`` holds (default: non-empty).

        Raises TimeoutError with the last result; the first sample of a new target
        takes about 5-6 s to appear (shared/TESTING.md).
        """
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"prometheus: {expr!r} gave {result} after {timeout:.0f} s")
            time.sleep(interval)

    def _log_tail(self) -> str:
        return last_log_line(self._log_path)


@contextmanager
def prometheus_server(scrape_targets: Sequence[str],
                      scrape_interval: str = "1s") -> Iterator[PrometheusServer]:
    """A running PrometheusServer scraping ``scrape_targets`` (``host:port`` strings)."""
    with tempfile.TemporaryDirectory(prefix="prometheus-test-") as tmp:
        server = PrometheusServer(tmp, scrape_targets, scrape_interval)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def promtool_check_metrics(exposition: str | bytes) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check metrics`` on an exposition text (fed on stdin)."""
    binary = require_binary("promtool", "prometheus")
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    return subprocess.run([binary, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)


def promtool_check_endpoint(port: int, host: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    """Scrape ``http://host:port/metrics`` once and run ``promtool check metrics`` on it."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
        return promtool_check_metrics(resp.read())
