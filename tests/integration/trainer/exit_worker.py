"""Joins torchrun's group with init_process_group_if_needed and exits without leaving it;
an exit handler registered first (so it runs last) records whether the group was left.

Usage: torchrun --nproc-per-node=2 exit_worker.py OUT_DIR
"""

import atexit
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from autolrs.distributed import init_process_group_if_needed


def record() -> None:
    Path(sys.argv[1], f"rank{os.environ['RANK']}.json").write_text(
        json.dumps({"in_process_group_at_exit": dist.is_initialized()}))


atexit.register(record)
context = init_process_group_if_needed()
print(context.mean_over_ranks(float(context.rank)))
