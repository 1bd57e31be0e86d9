"""Fixtures for the operator's integration tests: the KMock cluster, kubectl, the kubernetes
client, a real redis-server and the real operator (kopf) as a subprocess."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import kubernetes
import pytest

from tests.helpers.kmock_cluster import ClusterRunner, OperatorProcess
from tests.helpers.services import RedisServer, free_port, redis_server

ROOT = Path(__file__).resolve().parents[3]
CRD = ROOT / "crds" / "autolrsjob.yaml"
GROUP, VERSION, PLURAL = "autolrs.io", "v1alpha1", "autolrsjobs"
FAST_OPERATOR_ENV = {
    "AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS": "0.2",
    "AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS": "1",
    "AUTOLRS_OPERATOR_RESYNC_SECONDS": "2",
    "AUTOLRS_OPERATOR_STATUS_INTERVAL_SECONDS": "0.5",
    "AUTOLRS_OPERATOR_KEY_TTL_SECONDS": "3600",
}


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, KeyError, IndexError, TypeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


class Kube:
    """The kubernetes client (CoreV1 + CustomObjects) and kubectl, pointed at the emulator."""

    def __init__(self, kubeconfig: Path, namespace: str = "default") -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl; fail with its output when ``check`` and it fails."""
        result = subprocess.run(
            ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=60,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def job(self, name: str) -> dict[str, Any]:
        """The AutoLRSJob as the API returns it."""
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def jobs(self) -> list[dict[str, Any]]:
        """Every AutoLRSJob in the namespace."""
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]

    def status(self, name: str) -> dict[str, Any]:
        """The job's status (empty before the operator wrote one)."""
        return self.job(name).get("status") or {}

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        """One condition of the job (KeyError while absent)."""
        for item in self.status(name).get("conditions") or []:
            if item["type"] == type_:
                return item
        raise KeyError(type_)

    def pods(self, job: str) -> list[Any]:
        """The job's worker pods, sorted by name."""
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"autolrs.io/job={job},autolrs.io/role=worker").items
        return sorted(pods, key=lambda p: p.metadata.name)

    def pod_names(self, job: str) -> list[str]:
        """Names of the job's worker pods."""
        return [p.metadata.name for p in self.pods(job)]

    def set_pod_phase(self, name: str, phase: str, exit_code: int | None = None) -> None:
        """Do what a kubelet would: report a pod's phase (and its trainer's exit code)."""
        status: dict[str, Any] = {"phase": phase}
        if exit_code is not None:
            status["containerStatuses"] = [{
                "name": "trainer", "ready": False, "restartCount": 0, "image": "img", "imageID": "",
                "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}},
            }]
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})

    def run_pods(self, job: str, count: int) -> None:
        """Wait for ``count`` pods, then mark them all Running."""
        wait_for(lambda: len(self.pods(job)) == count, what=f"{count} pods of {job}")
        for pod in self.pods(job):
            self.set_pod_phase(pod.metadata.name, "Running")

    def events(self, name: str, reason: str | None = None) -> list[Any]:
        """Events about the job (optionally of one reason)."""
        items = self.core.list_namespaced_event(self.namespace).items
        return [e for e in items if e.involved_object.name == name and reason in (None, e.reason)]

    def apply(self, manifest: str) -> None:
        """kubectl apply (client-side; the emulator cannot serve OpenAPI for --validate)."""
        self.kubectl("apply", "--validate=false", "-f", "-", stdin=manifest)


def job_manifest(name: str, *, replicas: int = 2, max_replicas: int | None = 3, extra: str = "") -> str:
    """A small AutoLRSJob manifest."""
    max_line = f"  maxReplicas: {max_replicas}\n" if max_replicas else ""
    return (
        f"apiVersion: autolrs.io/v1alpha1\nkind: AutoLRSJob\nmetadata:\n  name: {name}\nspec:\n"
        f"  image: autolrs-operator:0.1.0\n  command: [examples/digits_cnn.py]\n"
        f"  replicas: {replicas}\n{max_line}"
        f"  autolrs: {{minLR: 0.001, maxLR: 1.0, tau: 100, tauMax: 400}}\n{extra}"
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for this module's kubeconfig and operator logs."""
    return tmp_path_factory.mktemp("operator")


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[ClusterRunner]:
    """The KMock Kubernetes API on a loopback port, with the AutoLRSJob CRD installed."""
    with ClusterRunner(workdir, [CRD]) as runner:
        yield runner


@pytest.fixture(scope="module")
def kube(cluster: ClusterRunner, workdir: Path) -> Kube:
    """Clients (kubernetes + kubectl) for the cluster."""
    return Kube(cluster.write_kubeconfig(workdir / "kubeconfig"))


@pytest.fixture(scope="module")
def redis(workdir: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def operator_factory(cluster: ClusterRunner, kube: Kube, workdir: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operators (stopped at the end of the module); each gets free metrics/liveness ports."""
    started: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        metrics_port, liveness_port = free_port(), free_port()
        process = OperatorProcess(
            cluster, kube.kubeconfig, workdir / f"operator-{len(started)}.log",
            env={**FAST_OPERATOR_ENV, "AUTOLRS_OPERATOR_METRICS_PORT": str(metrics_port), **env},
            liveness_port=liveness_port,
        )
        process.metrics_port, process.liveness_port = metrics_port, liveness_port  # type: ignore[attr-defined]
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def operator(operator_factory: Callable[..., OperatorProcess]) -> OperatorProcess:
    """One operator shared by the module's tests (each test uses its own job names)."""
    return operator_factory()
