"""Fixtures for the operator's integration tests: the KMock cluster, kubectl, the kubernetes
client, a real redis-server and the real operator (kopf) as a subprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.helpers.kmock_cluster import ClusterRunner, Kube, OperatorProcess
from tests.helpers.cluster_fixtures import cluster, kube, redis  # noqa: F401 (fixtures)
from tests.helpers.fixtures import prometheus_service_factory  # noqa: F401 (fixture)
from tests.helpers.chart_render import by_kind, real_helm
from tests.helpers.rbac import granted, rbac_permission
from tests.helpers.services import free_port

OPERATOR_TOKEN = "autolrs-operator"  # the bearer token of the operators these tests start

FAST_OPERATOR_ENV = {
    "AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS": "0.2",
    "AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS": "1",
    "AUTOLRS_OPERATOR_RESYNC_SECONDS": "2",
    "AUTOLRS_OPERATOR_STATUS_INTERVAL_SECONDS": "0.5",
    "AUTOLRS_OPERATOR_KEY_TTL_SECONDS": "3600",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for this module's kubeconfig and operator logs."""
    return tmp_path_factory.mktemp("operator")


@pytest.fixture(scope="module")
def operator_factory(cluster: ClusterRunner, kube: Kube, workdir: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operators (stopped at the end of the module); each gets free metrics/liveness ports."""
    started: list[OperatorProcess] = []
    # The operators' own identity: their requests are checked against the chart's RBAC.
    kubeconfig = cluster.write_kubeconfig(workdir / "operator-kubeconfig", token=OPERATOR_TOKEN)

    def start(**env: str) -> OperatorProcess:
        metrics_port, liveness_port = free_port(), free_port()
        process = OperatorProcess(
            cluster, kubeconfig, workdir / f"operator-{len(started)}.log",
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


@pytest.fixture(scope="module", autouse=True)
def operator_calls_within_the_charts_rbac(cluster: ClusterRunner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After a module's tests, every API call its operators really made (their own token)
    must be granted by the chart's default, cluster-wide RBAC: the static RBAC test
    derives the calls from the code, this one holds the real ones against it."""
    yield
    calls = cluster.requests_by(OPERATOR_TOKEN)
    assert calls, "the operators of this module made no API call"
    used = {p for p in (rbac_permission(method, url) for method, url in calls) if p is not None}
    objects = real_helm(tmp_path_factory.mktemp("rbac-helm")).template({})
    (role,) = by_kind(objects, "ClusterRole")
    missing = used - granted(role["rules"])
    assert not missing, f"the operator made calls the chart's RBAC does not grant: {sorted(missing)}"
