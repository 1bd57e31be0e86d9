"""The trainer's runtime from its environment: ranks, state store, metrics, checkpoints.

``Runtime.from_env()`` reads the operator-to-trainer contract (DESIGN.md), so one training
script runs unchanged on a laptop (nothing set: single process, no store, no metrics) and
in a pod under torchrun (everything set by the operator).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from autolrs.distributed import LOCAL_RANK_ENV, WORLD_SIZE_ENV, _env_int
from autolrs.lifetime import end_with_agent
from autolrs.stores.base import StateStore
from autolrs.stores.factory import STORE_PASSWORD_ENV, STORE_URL_ENV, open_store

CHECKPOINT_DIR_ENV = "AUTOLRS_CHECKPOINT_DIR"
METRICS_PORT_ENV = "AUTOLRS_METRICS_PORT"
CHECKPOINT_EVERY_ENV = "AUTOLRS_CHECKPOINT_EVERY"
DEFAULT_CHECKPOINT_EVERY = 500

log = logging.getLogger(__name__)


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
        """Build from AUTOLRS_* and torchrun's RANK/WORLD_SIZE variables.

        A bad value is a one-line ValueError naming its variable; what was opened before
        it is closed again."""
        env = os.environ if environ is None else environ
        end_with_agent(env)  # a SIGKILLed torchrun must not leave this worker training
        every = _env_int(env, CHECKPOINT_EVERY_ENV, DEFAULT_CHECKPOINT_EVERY, 1)
        coordinator, joined_group = _coordinator_from_env(env)
        runtime = cls(coordinator=coordinator, checkpoint_every=every)
        if joined_group:  # first in, last out: left after the writers have flushed
            runtime.owned.append(_JoinedProcessGroup())
        try:
            runtime._open_parts(env)
        except BaseException:
            with suppress(Exception):  # close() logged it; the cause matters more
                runtime.close()
            raise
        return runtime

    def _open_parts(self, env: Mapping[str, str]) -> None:
        """Open the store (main rank), the checkpoint manager and metrics (main rank; a pod's
        first process otherwise)."""
        is_main = self.coordinator.is_main
        url = env.get(STORE_URL_ENV)
        if url and is_main:
            job_key = None
            if url.startswith(("redis://", "rediss://", "unix://")):
                from autolrs.stores.redis import job_key_from_env

                job_key = job_key_from_env(env)
            with _folder_named_by(STORE_URL_ENV, url):
                self.store = open_store(url, job_key=job_key,
                                        password=env.get(STORE_PASSWORD_ENV) or None)
            self.owned.append(self.store)
        directory = env.get(CHECKPOINT_DIR_ENV)
        if directory:
            from autolrs.checkpoint import CheckpointManager

            with _folder_named_by(CHECKPOINT_DIR_ENV, directory):
                self.checkpoints = CheckpointManager(directory)
            self.owned.append(self.checkpoints)
        if env.get(METRICS_PORT_ENV) and is_main:
            from autolrs.metrics import TrainerMetrics

            self.metrics = TrainerMetrics.from_env(env)
            self.owned.append(self.metrics)
        elif env.get(METRICS_PORT_ENV) and _env_int(env, LOCAL_RANK_ENV, 0, 0) == 0:
            # The first process of a pod that does not host rank 0 answers on the pod's
            # port too (process_* only): otherwise its scrape target reads up == 0.
            from autolrs.metrics import pod_endpoint_from_env

            try:
                endpoint = pod_endpoint_from_env(env)
            except OSError as exc:  # two agents on one host: rank 0's metrics still flow
                log.warning("%s; this pod's scrape target will read up == 0", exc)
            else:
                if endpoint is not None:
                    self.owned.append(endpoint)

    def close(self) -> None:
        """Flush and close what this runtime opened (metrics port, checkpoint writer, store,
        the process group it joined), newest first. Every part is closed even if one
        fails, so a failing checkpoint writer cannot lose the store's queued writes; the
        first error is raised with the others attached as notes (and logged)."""
        errors: list[BaseException] = []
        for thing in reversed(self.owned):
            try:
                thing.close()
            except BaseException as exc:
                log.error("closing %s failed: %s", type(thing).__name__, exc, exc_info=exc)
                errors.append(exc)
        self.owned.clear()
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"closing another part also failed: {type(other).__name__}: "
                               f"{other}")
            raise first


class _JoinedProcessGroup:
    """The process group ``Runtime.from_env`` joined, left when the runtime closes: a gloo
    process that exits still in its group can abort ("terminate called without an active
    exception", SIGABRT) and fail the whole torchrun job."""

    def close(self) -> None:
        from autolrs.distributed import destroy_process_group_if_needed

        destroy_process_group_if_needed()


@contextmanager
def _folder_named_by(name: str, value: str) -> Iterator[None]:
    """Turn "a file is in the way of this folder" into a ValueError naming variable ``name``."""
    try:
        yield
    except (FileExistsError, NotADirectoryError) as exc:
        raise ValueError(f"{name}={value!r} must name a folder, but {exc.filename} is not "
                         "a directory (an existing file?)") from None


def _coordinator_from_env(env: Mapping[str, str]) -> tuple[Any, bool]:
    """The coordinator, and whether this call joined the process group."""
    world_size = _env_int(env, WORLD_SIZE_ENV, 1, 1)
    if world_size <= 1:
        from autolrs.scheduler import SingleProcess

        return SingleProcess(), False
    import torch.distributed as dist

    from autolrs.distributed import DistContext, init_process_group_if_needed

    already_joined = dist.is_available() and dist.is_initialized()
    init_process_group_if_needed()
    return DistContext.from_env(env), not already_joined and dist.is_initialized()
