"""Fixtures for the trainer integration tests: real redis-server and Prometheus."""

from tests.helpers.fixtures import (  # noqa: F401  (fixtures are found by name)
    prometheus_service_factory,
    redis_service,
    redis_service_factory,
)
