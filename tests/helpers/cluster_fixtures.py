"""Module-scoped pytest fixtures shared by the operator's integration and e2e suites: the
KMock cluster with the AutoLRSJob CRD, its clients, and a real redis-server.

A conftest imports them and defines ``workdir`` (where kubeconfig and logs go)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers.kmock_cluster import ClusterRunner, Kube
from tests.helpers.services import RedisServer, redis_server

CRD = Path(__file__).resolve().parents[2] / "crds" / "autolrsjob.yaml"


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
