"""The distributed helpers in a single process: no group, identity collectives."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from autolrs.distributed import (
    DistContext,
    broadcast_object,
    default_backend,
    init_process_group_if_needed,
    mean_over_ranks,
)


def test_single_process_without_env_needs_no_group():
    context = init_process_group_if_needed(environ={})
    assert not dist.is_initialized()
    assert (context.rank, context.world_size, context.local_rank) == (0, 1, 0)
    assert context.is_main and not context.distributed
    assert context.mean_over_ranks(2.5) == 2.5
    payload = {"lr": 0.1}
    assert context.broadcast_object(payload) is payload
    assert mean_over_ranks(3) == 3.0 and broadcast_object([1], src=0) == [1]
    context.barrier()


def test_context_from_torchrun_env():
    context = DistContext.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (context.rank, context.world_size, context.local_rank) == (3, 4, 1)
    assert not context.is_main
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert context.device.type == expected


def test_backend_follows_cuda():
    assert default_backend() == ("nccl" if torch.cuda.is_available() else "gloo")


@pytest.mark.parametrize("env, message", [
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK must be an integer >= 0, got 'x'"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE must be an integer >= 1"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 must be < WORLD_SIZE=2"),
    ({"LOCAL_RANK": "-1"}, "LOCAL_RANK must be an integer >= 0"),
])
def test_bad_env_is_named(env, message):
    with pytest.raises(ValueError, match=message):
        DistContext.from_env(env)


def test_torchrun_env_without_master_address_is_named():
    with pytest.raises(ValueError, match="MASTER_ADDR is not set: start the script with torchrun"):
        init_process_group_if_needed(environ={"RANK": "0", "WORLD_SIZE": "2"})
