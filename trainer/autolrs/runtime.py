"""The trainer's runtime from its environment: ranks, state store, metrics, checkpoints.

``Runtime.from_env()`` reads the operator-to-trainer contract (DESIGN.md), so one training
script runs unchanged on a laptop (nothing set: single process, no store, no metrics) and
in a pod under torchrun (everything set by the operator).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from autolrs.stores.base import StateStore
from autolrs.stores.factory import STORE_URL_ENV, open_store

CHECKPOINT_DIR_ENV = "AUTOLRS_CHECKPOINT_DIR"
METRICS_PORT_ENV = "AUTOLRS_METRICS_PORT"
CHECKPOINT_EVERY_ENV = "AUTOLRS_CHECKPOINT_EVERY"
DEFAULT_CHECKPOINT_EVERY = 500


@dataclass
class Runtime:
    """What surrounds the algorithm: who decides, where state and metrics go."""

    coordinator: Any = None             # autolrs.distributed.DistContext or SingleProcess
    store: StateStore | None = None
    metrics: Any | None = None          # autolrs.metrics.TrainerMetrics
    checkpoints: Any | None = None      # autolrs.checkpoint.CheckpointManager
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    owned: list[Any] = field(default_factory=list)  # things to close at the end

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Runtime":
        """Build from AUTOLRS_* and torchrun's RANK/WORLD_SIZE variables."""
        env = os.environ if environ is None else environ
        coordinator, joined_group = _coordinator_from_env(env)
        runtime = cls(coordinator=coordinator)
        if joined_group:  # first in, last out: left after the writers have flushed
            runtime.owned.append(_JoinedProcessGroup())
        is_main = runtime.coordinator.is_main
        every = env.get(CHECKPOINT_EVERY_ENV)
        if every is not None:
            try:
                runtime.checkpoint_every = int(every)
            except ValueError:
                raise ValueError(f"{CHECKPOINT_EVERY_ENV} must be an integer >= 1, "
                                 f"got {every!r}") from None
            if runtime.checkpoint_every < 1:
                raise ValueError(f"{CHECKPOINT_EVERY_ENV} must be an integer >= 1, got {every!r}")
        url = env.get(STORE_URL_ENV)
        if url and is_main:
            job_key = None
            if url.startswith(("redis://", "rediss://", "unix://")):
                from autolrs.stores.redis import job_key_from_env

                job_key = job_key_from_env(env)
            runtime.store = open_store(url, job_key=job_key)
            runtime.owned.append(runtime.store)
        directory = env.get(CHECKPOINT_DIR_ENV)
        if directory:
            from autolrs.checkpoint import CheckpointManager

            runtime.checkpoints = CheckpointManager(directory)
            runtime.owned.append(runtime.checkpoints)
        if env.get(METRICS_PORT_ENV) and is_main:
            from autolrs.metrics import TrainerMetrics

            runtime.metrics = TrainerMetrics.from_env(env)
            runtime.owned.append(runtime.metrics)
        return runtime

    def close(self) -> None:
        """Flush and close what this runtime opened (checkpoint writer, store, metrics port,
        the process group it joined)."""
        for thing in reversed(self.owned):
            thing.close()
        self.owned.clear()


class _JoinedProcessGroup:
    """The process group ``Runtime.from_env`` joined, left when the runtime closes: a gloo
    process that exits still in its group can abort ("terminate called without an active
    exception", SIGABRT) and fail the whole torchrun job."""

    def close(self) -> None:
        from autolrs.distributed import destroy_process_group_if_needed

        destroy_process_group_if_needed()


def _coordinator_from_env(env: Mapping[str, str]) -> tuple[Any, bool]:
    """The coordinator, and whether this call joined the process group."""
    world_size = int(env.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1:
        from autolrs.scheduler import SingleProcess

        return SingleProcess(), False
    import torch.distributed as dist

    from autolrs.distributed import DistContext, init_process_group_if_needed

    already_joined = dist.is_available() and dist.is_initialized()
    init_process_group_if_needed()
    return DistContext.from_env(env), not already_joined and dist.is_initialized()
