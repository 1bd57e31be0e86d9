"""Benchmarks: AutoLRS against tuned LR schedules, and the cost of its machinery.

Run with ``python -m bench`` (``make bench``); ``python -m bench --help`` lists the options.
"""

from pathlib import Path

# Where the committed results live (relative to the repository root, where the bench runs).
DEFAULT_OUT = Path("bench/results")
