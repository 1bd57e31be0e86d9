"""How ranks agree: the process group from torchrun's environment, mean and broadcast.

Under torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT`` set)
``init_process_group_if_needed()`` joins the group with nccl when CUDA is available and
gloo otherwise. A plain ``python script.py`` has none of these variables: it is a single
process, needs no group, and every helper here is the identity.
``DistContext`` satisfies the ``Coordinator`` protocol the AutoLRS wrapper takes.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

from autolrs.group_store import group_store, uses_agent_store

log = logging.getLogger(__name__)

RANK_ENV, WORLD_SIZE_ENV, LOCAL_RANK_ENV = "RANK", "WORLD_SIZE", "LOCAL_RANK"


def _env_int(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {raw!r}")
    return value


def default_backend() -> str:
    """``nccl`` when CUDA is available, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank, world size, local rank and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: it owns the controller, the store, the metrics and the checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use (more than one rank, or torchrun's env)."""
        return dist.is_available() and dist.is_initialized()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DistContext":
        """Read torchrun's RANK, WORLD_SIZE and LOCAL_RANK (defaults: one process)."""
        environ = os.environ if environ is None else environ
        world_size = _env_int(environ, WORLD_SIZE_ENV, 1, 1)
        rank = _env_int(environ, RANK_ENV, 0, 0)
        local_rank = _env_int(environ, LOCAL_RANK_ENV, 0, 0)
        if rank >= world_size:
            raise ValueError(f"{RANK_ENV}={rank} must be < {WORLD_SIZE_ENV}={world_size}")
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        else:
            device = torch.device("cpu")
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=device)

    def mean_over_ranks(self, value: float) -> float:
        """The mean of ``value`` over all ranks (identity without a process group)."""
        return mean_over_ranks(value, device=self.device)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` as rank ``src`` has it, on every rank (identity without a group)."""
        return broadcast_object(obj, src=src, device=self.device)

    def barrier(self) -> None:
        """Wait for every rank (no-op without a process group)."""
        if _group_active():
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()


def _launched_by_torchrun(environ: Mapping[str, str]) -> bool:
    return RANK_ENV in environ and WORLD_SIZE_ENV in environ


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_process_group_if_needed(backend: str | None = None,
                                 timeout: timedelta | None = None,
                                 environ: Mapping[str, str] | None = None) -> DistContext:
    """Join torchrun's process group (nccl on CUDA, else gloo) and return this rank's
    context; without torchrun's env (or if already joined) only the context is built.
    Under torchrun's agent the group forms on a store of its own (autolrs.group_store).
    A group joined here is left at interpreter exit if the script has not left it."""
    environ = os.environ if environ is None else environ
    context = DistContext.from_env(environ)
    if not _launched_by_torchrun(environ) or (dist.is_available() and dist.is_initialized()):
        return context
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not environ.get(name):
            raise ValueError(f"{name} is not set: start the script with torchrun")
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(context.device)
    kwargs: dict[str, Any] = {"backend": backend, "rank": context.rank,
                              "world_size": context.world_size}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if uses_agent_store(environ):  # torch reuses the agent's store across restarts
        kwargs["store"] = group_store(environ, context.rank, context.world_size,
                                      timeout or default_pg_timeout)
    dist.init_process_group(**kwargs)
    # Leave the group at exit if the script does not: a gloo rank that exits still in it
    # can abort in interpreter finalization (SIGABRT) and fail the whole torchrun job.
    atexit.register(destroy_process_group_if_needed)
    return context


def destroy_process_group_if_needed() -> None:
    """Leave the process group if one was joined, together with the other ranks.

    The barrier first: a gloo rank whose peer tore its connections down while it was still
    busy (writing its last files, say) aborted at exit ("terminate called without an
    active exception") and failed the finished torchrun job. A peer already gone makes the
    barrier fail at once; the group is left all the same."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1:
        try:
            dist.barrier()
        except RuntimeError as exc:
            log.warning("leaving the process group without the other ranks: %s", exc)
    dist.destroy_process_group()


def _collective_device(device: torch.device | None) -> torch.device:
    if dist.get_backend() == "nccl":
        return device if device is not None and device.type == "cuda" \
            else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(value: float, device: torch.device | None = None) -> float:
    """The mean of ``value`` over all ranks (all-reduce in float64); identity for one rank."""
    if not _group_active():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64,
                          device=_collective_device(device))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0, device: torch.device | None = None) -> Any:
    """Every rank gets ``obj`` as rank ``src`` passed it (picklable); identity for one rank."""
    if not _group_active():
        return obj
    holder = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(holder, src=src, device=_collective_device(device))
    return holder[0]
