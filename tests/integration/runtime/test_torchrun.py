"""The distributed helpers under a real torchrun with 2 processes (gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WORKER = Path(__file__).with_name("dist_worker.py")


def test_mean_and_broadcast_over_two_ranks(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU, even on a machine with a GPU
    proc = subprocess.run(
        [str(torchrun), "--nnodes=1", "--nproc-per-node=2", f"--master-port={free_port()}",
         str(WORKER), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, result in enumerate(results):
        assert result["rank"] == rank and result["world_size"] == 2
        assert result["is_main"] is (rank == 0)
        assert result["device"] == "cpu"
        assert result["mean"] == 1.5
        assert result["mean_module"] == 5.0
        assert result["from_rank0"] == {"decision": "restore", "by": 0}
        assert result["from_rank1"] == ["lr", 0.2]
