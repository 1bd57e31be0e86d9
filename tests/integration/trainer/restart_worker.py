"""Fails once, then succeeds: under ``torchrun --max-restarts=1`` the last rank exits 3 on
the first attempt (after joining the group, when there are several ranks), so the agent
restarts the group in place. Every attempt arms the parent-death signal and joins its
group through ``Runtime.from_env``, then stays alive a while, where a signal sent on the
death of a spawning thread (not of the agent) would end it. The second attempt's group
must form although the agent's store still holds the first one's addresses.

Usage: torchrun --nproc-per-node=N --max-restarts=1 restart_worker.py OUT_DIR
"""

import os
import sys
import time
from pathlib import Path

from autolrs.runtime import Runtime

runtime = Runtime.from_env()
rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
if attempt == 0 and rank == world_size - 1:
    os._exit(3)  # no goodbye to the group: a crash
time.sleep(3)
mean = runtime.coordinator.mean_over_ranks(float(rank)) if world_size > 1 else 0.0
Path(sys.argv[1], f"rank{rank}-attempt{attempt}.txt").write_text(f"{mean}\n")
runtime.close()
