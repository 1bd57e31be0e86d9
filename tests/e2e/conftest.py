"""Fixtures for the operator's end-to-end tests: the KMock cluster, a real redis-server, the
real operator and the local pod runner (each worker pod becomes a real torchrun process)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.pod_runner import PodRunner
from tests.helpers.kmock_cluster import ClusterRunner, Kube, OperatorProcess
from tests.helpers.cluster_fixtures import cluster, kube, redis  # noqa: F401 (fixtures)
from tests.helpers.services import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs, kubeconfig and the pods' volumes."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def operator(cluster: ClusterRunner, kube: Kube, workdir: Path) -> Iterator[OperatorProcess]:
    """The real operator (kopf), with a short backoff."""
    process = OperatorProcess(
        cluster, kube.kubeconfig, workdir / "operator.log",
        env={"AUTOLRS_OPERATOR_METRICS_PORT": str(free_port()),
             "AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS": "1",
             "AUTOLRS_OPERATOR_STATUS_INTERVAL_SECONDS": "1",
             "AUTOLRS_OPERATOR_RESYNC_SECONDS": "5"},
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def pod_runner(kube: Kube, workdir: Path) -> Iterator[PodRunner]:
    """Runs every worker pod as a local torchrun process."""
    with PodRunner(kube.api_client, "default", workdir, cwd=ROOT) as runner:
        yield runner
