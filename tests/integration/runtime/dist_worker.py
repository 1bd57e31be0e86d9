"""Helper script for the torchrun test: each rank writes what the collectives gave it.

Usage: torchrun --nproc-per-node=2 dist_worker.py OUT_DIR
"""

import json
import sys
from pathlib import Path

from autolrs.distributed import (
    broadcast_object,
    destroy_process_group_if_needed,
    init_process_group_if_needed,
    mean_over_ranks,
)


def main() -> None:
    context = init_process_group_if_needed()
    result = {
        "rank": context.rank,
        "world_size": context.world_size,
        "is_main": context.is_main,
        "device": str(context.device),
        "mean": context.mean_over_ranks(float(context.rank + 1)),
        "mean_module": mean_over_ranks(10.0 * context.rank),
        "from_rank0": context.broadcast_object({"decision": "restore", "by": context.rank}),
        "from_rank1": broadcast_object(["lr", 0.1 * (context.rank + 1)], src=1),
    }
    context.barrier()
    destroy_process_group_if_needed()
    Path(sys.argv[1], f"rank{context.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
