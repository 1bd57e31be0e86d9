"""group_store with real TCPStores on loopback: rank 0 announces a fresh store, the others
skip an announcement whose store is gone or belongs to someone else."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import torch.distributed as dist

from autolrs import group_store as gs

TIMEOUT = timedelta(seconds=20)


@pytest.fixture
def agent():
    """The agent's store: a TCPStore server on a free port, as torchrun hosts it."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=TIMEOUT, wait_for_workers=False)
    return store


def env(agent) -> dict[str, str]:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(agent.port),
            "TORCHELASTIC_USE_AGENT_STORE": "True"}


def test_only_the_agent_store_case_is_taken_over():
    assert gs.uses_agent_store({"TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert not gs.uses_agent_store({"TORCHELASTIC_USE_AGENT_STORE": "False"})
    assert not gs.uses_agent_store({})


def test_every_rank_ends_on_the_store_rank_0_announced(agent):
    stores: dict[int, dist.Store] = {}

    def join(rank: int) -> None:
        stores[rank] = gs.group_store(env(agent), rank, 3, TIMEOUT)

    threads = [threading.Thread(target=join, args=(rank,)) for rank in (2, 1, 0)]
    for thread in threads:  # the others ask before rank 0 has announced anything
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(stores) == [0, 1, 2]
    stores[1].set("from-1", "x")
    assert stores[0].get("from-1") == b"x" and stores[2].get("from-1") == b"x"
    assert stores[0].port != agent.port  # not the agent's store


def test_a_stale_announcement_of_a_dead_store_is_skipped(agent):
    old = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=TIMEOUT, wait_for_workers=False)
    old_port = old.port
    agent.set(gs.ANNOUNCE_KEY, f"stale {old_port}")  # the last attempt's rank 0 ...
    del old                                           # ... is gone, its port closed
    result: dict[str, dist.Store] = {}
    joiner = threading.Thread(target=lambda: result.update(
        store=gs.group_store(env(agent), 1, 2, TIMEOUT)))
    joiner.start()
    rank0 = gs.group_store(env(agent), 0, 2, TIMEOUT)
    joiner.join(30)
    rank0.set("k", "v")
    assert result["store"].get("k") == b"v"


def test_an_announced_port_that_answers_with_another_nonce_is_skipped(agent):
    other = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=TIMEOUT, wait_for_workers=False)
    other.set(gs.OWNER_KEY, "someone-else")
    agent.set(gs.ANNOUNCE_KEY, f"mine {other.port}")
    assert gs._answering("127.0.0.1", other.port, "mine") is None
    assert gs._answering("127.0.0.1", other.port, "someone-else") is not None


def test_no_store_that_answers_in_time_is_a_runtime_error(agent, monkeypatch):
    monkeypatch.setattr(gs, "PROBE_TIMEOUT", timedelta(seconds=0.2))
    agent.set(gs.ANNOUNCE_KEY, "stale 1")  # port 1: nothing listens there
    with pytest.raises(RuntimeError, match="rank 0 announced no store that answers"):
        gs.group_store(env(agent), 1, 2, timedelta(seconds=1))
