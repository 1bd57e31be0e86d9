"""A test-only kubelet: runs each worker pod of the emulated cluster as a local process.

``PodRunner`` polls the API for pods labelled ``autolrs.io/role=worker``, and for each new
one starts its container command (with the pod's environment, ``$(VAR)`` expanded as
Kubernetes does) in a process group of its own, reporting ``Running`` and then
``Succeeded``/``Failed`` with the exit code back through the pod's status subresource.
Cluster-only things are mapped to the local machine:

- ``torchrun`` -> ``python -m torch.distributed.run`` of this interpreter;
- the job's rendezvous address ``<job>-rdzv.<ns>.svc:29400`` -> ``127.0.0.1:<free port>``
  (one port per Service), ``status.podIP`` -> ``127.0.0.1``;
- volume mount paths -> folders under the runner's directory (a PVC is one folder shared by
  every pod that mounts it, an emptyDir one folder per pod);
- ``AUTOLRS_METRICS_PORT`` -> a free port per pod (pods share one network here).

A deleted pod's processes are terminated; ``kill()`` SIGKILLs one (a crash).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

RDZV_PORT = 29400
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, ``$$`` is a ``$``."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return _VAR.sub(replace, text)


@dataclass
class LocalPod:
    """One pod's process and where its output goes."""

    name: str
    uid: str
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = False
    reported: str = "Running"


@dataclass
class PodRunner:
    """Run the emulated cluster's worker pods as local processes (see the module doc)."""

    api_client: kubernetes.client.ApiClient
    namespace: str
    workdir: Path
    cwd: Path
    poll_seconds: float = 0.1
    pods: dict[str, LocalPod] = field(default_factory=dict)
    history: list[LocalPod] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> "PodRunner":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        for pod in list(self.pods.values()):
            self._terminate(pod)

    # ----------------------------------------------------------------- control

    def kill(self, name: str) -> None:
        """SIGKILL every process of a running pod, as a crashing node would."""
        with self._lock:
            pod = self.pods[name]
            pod.killed = True
            _signal_group(pod.process, signal.SIGKILL)

    def log(self, name: str) -> str:
        """What every incarnation of the pod named ``name`` printed, oldest first."""
        return "".join(p.log.read_text(errors="replace") for p in self.history if p.name == name and p.log.exists())

    # -------------------------------------------------------------------- loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - kept for the test to report
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_seconds)

    def _sync(self) -> None:
        listed = self.core.list_namespaced_pod(self.namespace, label_selector="autolrs.io/role=worker").items
        current = {p.metadata.uid: p for p in listed}
        with self._lock:
            for key, pod in list(self.pods.items()):
                if pod.uid not in current or current[pod.uid].metadata.deletion_timestamp:
                    self._terminate(pod)
                    del self.pods[key]
            for pod in listed:
                name = pod.metadata.name
                if name not in self.pods and not pod.metadata.deletion_timestamp and pod.status.phase == "Pending":
                    self.pods[name] = self._start(pod)
                    self.history.append(self.pods[name])
            for pod in self.pods.values():
                self._report(pod)

    def _start(self, pod: Any) -> LocalPod:
        container = pod.spec.containers[0]
        mounts = self._mounts(pod)
        env = self._env(pod, container, mounts)
        argv = [expand(a, env) for a in list(container.command or []) + list(container.args or [])]
        argv = [self._map(a, mounts) for a in argv]
        if argv and argv[0] == "torchrun":
            argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
        log = self.workdir / f"{pod.metadata.name}-{pod.metadata.uid[:8]}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self._patch(pod.metadata.name, {
            "phase": "Running", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": container.name, "ready": True, "restartCount": 0,
                                   "image": container.image, "imageID": "",
                                   "state": {"running": {}}}],
        })
        return LocalPod(pod.metadata.name, pod.metadata.uid, process, log)

    def _report(self, pod: LocalPod) -> None:
        code = pod.process.poll()
        if code is None or pod.reported != "Running":
            return
        exit_code = 128 + -code if code < 0 else code
        phase = "Succeeded" if exit_code == 0 else "Failed"
        self._patch(pod.name, {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "trainer", "ready": False, "restartCount": 0, "image": "", "imageID": "",
                                   "state": {"terminated": {"exitCode": exit_code,
                                                            "reason": "Completed" if exit_code == 0 else "Error"}}}],
        })
        pod.reported = phase

    def _terminate(self, pod: LocalPod) -> None:
        if pod.process.poll() is None:
            _signal_group(pod.process, signal.SIGTERM)
            try:
                pod.process.wait(15)
            except subprocess.TimeoutExpired:
                _signal_group(pod.process, signal.SIGKILL)
                pod.process.wait(15)

    def _patch(self, name: str, status: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise

    # ----------------------------------------------------------------- mapping

    def _mounts(self, pod: Any) -> dict[str, Path]:
        volumes = {v.name: v for v in pod.spec.volumes or []}
        mounts: dict[str, Path] = {}
        for mount in pod.spec.containers[0].volume_mounts or []:
            volume = volumes.get(mount.name)
            if volume is not None and volume.persistent_volume_claim is not None:
                local = self.workdir / "pvc" / volume.persistent_volume_claim.claim_name
            else:
                local = self.workdir / "pods" / pod.metadata.name / mount.name
            local.mkdir(parents=True, exist_ok=True)
            mounts[mount.mount_path] = local
        return mounts

    def _env(self, pod: Any, container: Any, mounts: dict[str, Path]) -> dict[str, str]:
        env: dict[str, str] = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
        env["HOSTNAME"] = pod.metadata.name
        for var in container.env or []:
            if var.value_from is None:
                value = expand(var.value or "", env)
            elif var.value_from.field_ref is not None:
                value = self._field(pod, var.value_from.field_ref.field_path)
            elif var.value_from.secret_key_ref is not None:
                ref = var.value_from.secret_key_ref
                secret = self.core.read_namespaced_secret(ref.name, self.namespace)
                value = base64.b64decode(secret.data[ref.key]).decode()
            else:
                raise ValueError(f"pod {pod.metadata.name}: unsupported env source for {var.name}")
            env[var.name] = self._map(value, mounts)
        if "AUTOLRS_METRICS_PORT" in env:
            env["AUTOLRS_METRICS_PORT"] = str(free_port())
        return env

    def _field(self, pod: Any, path: str) -> str:
        return {"status.podIP": "127.0.0.1", "metadata.name": pod.metadata.name,
                "metadata.namespace": pod.metadata.namespace}[path]

    def _map(self, value: str, mounts: dict[str, Path]) -> str:
        for match in re.finditer(r"([a-z0-9-]+-rdzv)\.([a-z0-9-]+)\.svc:(\d+)", value):
            if match.group(0) not in self.endpoints:
                self.endpoints[match.group(0)] = f"127.0.0.1:{free_port()}"
            value = value.replace(match.group(0), self.endpoints[match.group(0)])
        for mount_path in sorted(mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path + "/") or f"://{mount_path}" in value:
                value = value.replace(mount_path, str(mounts[mount_path]), 1)
        return value


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
