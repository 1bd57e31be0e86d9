"""A fresh store for every process group torchrun starts, so that a restart in place never
reads the previous attempt's addresses.

Under torchrun the workers' default store is a client of the agent's TCPStore, and torch
2.13 keeps that one store, without a per-attempt prefix, for every group the agent
starts: a group restarted in place (``--max-restarts``, or re-rendezvous after a peer
died) can read the last group's gloo addresses from it and fail ("connectFullMesh failed
... Connection refused") or hang. A prefix by restart count cannot fix that, because
restart counts are per agent: a replacement pod's ranks would wait under another prefix
than the survivors'. So rank 0 hosts a new store on a free port and announces it (a
nonce and the port) under one key of the agent's store; the other ranks take an
announcement only once the store it names answers with the same nonce, which skips a
stale one (its rank 0 is gone, or its port now belongs to a newer store).
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Mapping

import torch.distributed as dist

AGENT_STORE_ENV = "TORCHELASTIC_USE_AGENT_STORE"
ANNOUNCE_KEY = "autolrs/group_store"
OWNER_KEY = "autolrs/group_store_owner"
PROBE_TIMEOUT = timedelta(seconds=2)  # connecting to a stale announcement's port
RETRY_SECONDS = 0.1


def uses_agent_store(environ: Mapping[str, str]) -> bool:
    """Whether torchrun's agent hosts the store the workers would share (``env://``)."""
    return environ.get(AGENT_STORE_ENV) == "True"


def group_store(environ: Mapping[str, str], rank: int, world_size: int,
                timeout: timedelta) -> dist.Store:
    """This attempt's own store: hosted by rank 0, found by the others through the agent's
    store at ``MASTER_ADDR:MASTER_PORT``. Gives up after ``timeout`` (RuntimeError)."""
    host, port = environ["MASTER_ADDR"], int(environ["MASTER_PORT"])
    agent = dist.TCPStore(host, port, is_master=False, timeout=timeout)
    if rank == 0:
        store = dist.TCPStore(host, 0, world_size, is_master=True, timeout=timeout,
                              wait_for_workers=False)
        nonce = uuid.uuid4().hex
        store.set(OWNER_KEY, nonce)
        agent.set(ANNOUNCE_KEY, f"{nonce} {store.port}")
        return store
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        nonce, announced_port = agent.get(ANNOUNCE_KEY).decode().split()
        store = _answering(host, int(announced_port), nonce)
        if store is not None:
            store.set_timeout(timeout)
            return store
        if time.monotonic() > deadline:
            raise RuntimeError(f"rank 0 announced no store that answers within {timeout} "
                               f"(last: {host}:{announced_port})")
        time.sleep(RETRY_SECONDS)


def _answering(host: str, port: int, nonce: str) -> dist.Store | None:
    """The store at ``host:port`` if it is the one announced with ``nonce``, else None."""
    try:
        store = dist.TCPStore(host, port, is_master=False, timeout=PROBE_TIMEOUT)
        if store.check([OWNER_KEY]) and store.get(OWNER_KEY).decode() == nonce:
            return store
    except (RuntimeError, dist.DistError):  # refused, reset or timed out: gone
        pass
    return None
