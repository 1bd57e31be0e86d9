"""Helper process for the kill -9 test: resume from the newest checkpoint, then save forever.

Usage: python ckpt_writer.py DIR. Each checkpoint of step s holds a tensor filled with s.
"""

import sys

import torch

from autolrs.checkpoint import CheckpointManager

SIZE = 2_000_000  # 8 MB: a write takes long enough for kills to land inside it


def main() -> None:
    manager = CheckpointManager(sys.argv[1], keep_last=3)
    latest = manager.load_latest()
    step = 0 if latest is None else latest[0]
    while True:
        step += 1
        manager.save(step, {"weights": torch.full((SIZE,), float(step)), "step": step})


if __name__ == "__main__":
    main()
