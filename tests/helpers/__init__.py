"""Shared test helpers: real services (Redis, Prometheus) started on free loopback ports."""
