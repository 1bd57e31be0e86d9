"""Operator-wide settings, read once from the environment (bad values fail start-up loudly)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping

from autolrs_operator.reconcile import Backoff
from autolrs_operator.spec import SecretKey, StateStore, store_url_problem


@dataclass(frozen=True)
class OperatorSettings:
    """Ports, periods, backoff and the default state store."""

    metrics_port: int = 8080
    resync_seconds: float = 30.0
    status_interval_seconds: float = 10.0
    backoff: Backoff = Backoff()
    key_ttl_seconds: int = 86400
    default_store: StateStore | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "OperatorSettings":
        """Read ``AUTOLRS_OPERATOR_*`` and ``AUTOLRS_DEFAULT_STORE_*`` variables."""
        env = os.environ if environ is None else environ
        base = _number(env, "AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS", 10.0, minimum=0.0)
        cap = _number(env, "AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS", 300.0, minimum=0.0)
        if cap < base:
            raise ValueError(
                f"AUTOLRS_OPERATOR_BACKOFF_MAX_SECONDS must be >= AUTOLRS_OPERATOR_BACKOFF_BASE_SECONDS "
                f"({base:g}), got {cap:g}"
            )
        return cls(
            metrics_port=int(_number(env, "AUTOLRS_OPERATOR_METRICS_PORT", 8080, minimum=0, maximum=65535, integer=True)),
            resync_seconds=_number(env, "AUTOLRS_OPERATOR_RESYNC_SECONDS", 30.0, minimum=0.1),
            status_interval_seconds=_number(env, "AUTOLRS_OPERATOR_STATUS_INTERVAL_SECONDS", 10.0, minimum=0.1),
            backoff=Backoff(base_seconds=base, max_seconds=cap),
            key_ttl_seconds=int(_number(env, "AUTOLRS_OPERATOR_KEY_TTL_SECONDS", 86400, minimum=1, integer=True)),
            default_store=_default_store(env),
        )


def _default_store(env: Mapping[str, str]) -> StateStore | None:
    url = env.get("AUTOLRS_DEFAULT_STORE_URL") or None
    problem = None if url is None else store_url_problem(url)
    if problem is not None:
        raise ValueError(f"AUTOLRS_DEFAULT_STORE_URL {problem}")
    secret = None
    raw = env.get("AUTOLRS_DEFAULT_STORE_SECRET") or None
    if raw is not None:
        name, _, key = raw.partition("/")
        if not name or not key:
            raise ValueError(f"AUTOLRS_DEFAULT_STORE_SECRET must be SECRET_NAME/KEY, got {raw!r}")
        secret = SecretKey(name=name, key=key)
    if url is None and secret is None:
        return None
    if url is not None and secret is not None and url.startswith("file://"):
        raise ValueError(
            "AUTOLRS_DEFAULT_STORE_SECRET must be unset with a file:// AUTOLRS_DEFAULT_STORE_URL "
            "(a password makes no sense for a file store)"
        )
    return StateStore(url=url, secret=secret)


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum:g}" if maximum is None else f"in [{minimum:g}, {maximum:g}]"
        raise ValueError(f"{name} must be {bound}, got {raw!r}")
    return value
