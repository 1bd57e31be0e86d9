"""pytest fixtures over ``tests.helpers.services``; a conftest imports the ones it needs:

    from tests.helpers.fixtures import redis_service, redis_service_factory  # noqa: F401
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Callable, Iterator, Sequence

import pytest

from tests.helpers.services import PrometheusServer, RedisServer, prometheus_server, redis_server


@pytest.fixture
def redis_service() -> Iterator[RedisServer]:
    """An ephemeral redis-server (no persistence) for one test."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_service_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers with options, e.g. ``redis_service_factory(appendonly=True)``;
    all are stopped after the test."""
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(redis_server(**options))


@pytest.fixture
def prometheus_service_factory() -> Iterator[Callable[[Sequence[str]], PrometheusServer]]:
    """Start a Prometheus scraping the given ``host:port`` targets; stopped after the test."""
    with ExitStack() as stack:
        yield lambda targets, **options: stack.enter_context(
            prometheus_server(targets, **options))
