"""A torchrun worker ends when its agent does, however the agent ended.

torchrun starts each worker in a session of its own and stops the workers itself when it
is interrupted or terminated; a SIGKILLed agent (``kill -9`` of ``autolrs run`` or of
torchrun, the OOM killer) leaves them running with no one to restart or stop them: they
train on alone, hold the rendezvous port and write the same checkpoints and store as the
run that replaces them. Linux's parent-death signal closes that gap.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import Mapping

log = logging.getLogger(__name__)

AGENT_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun's agent in every worker's environment
PR_SET_PDEATHSIG = 1                # <linux/prctl.h>


def end_with_agent(environ: Mapping[str, str] | None = None,
                   sig: int = signal.SIGTERM) -> bool:
    """Under torchrun on Linux, have the kernel send ``sig`` to this process when its
    parent (the agent) dies; if it already has, send it now. True when armed; False
    without an agent or off Linux, and when prctl fails (logged: training goes on)."""
    environ = os.environ if environ is None else environ
    if AGENT_ENV not in environ or not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        log.warning("cannot ask to end with the torchrun agent (prctl: %s); a killed agent "
                    "will leave this worker running", os.strerror(ctypes.get_errno()))
        return False
    if os.getppid() != parent:  # the agent died between the two calls
        os.kill(os.getpid(), sig)
    return True
