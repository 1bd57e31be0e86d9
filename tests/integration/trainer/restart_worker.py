"""Fails once, then succeeds: under ``torchrun --max-restarts=1`` the first attempt arms the
parent-death signal (``Runtime.from_env``) and exits 3, so the agent starts the worker
again; the second attempt arms it too and then stays alive a while, where a signal sent
on the death of a spawning thread (not of the agent) would end it.

One process: a restarted group of several would first meet torch 2.13's stale gloo
addresses in the agent's store (a restart reuses it without a prefix), which has nothing
to do with the signal.

Usage: torchrun --nproc-per-node=1 --max-restarts=1 restart_worker.py OUT_DIR
"""

import json
import os
import sys
import time
from pathlib import Path

from autolrs.runtime import Runtime

runtime = Runtime.from_env()
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
if attempt == 0:
    sys.exit(3)
time.sleep(3)
Path(sys.argv[1], f"attempt{attempt}.json").write_text(
    json.dumps({"pid": os.getpid(), "ppid": os.getppid()}))
runtime.close()
