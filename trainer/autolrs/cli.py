"""The `autolrs` command: `autolrs demo` (the main job, local) and `autolrs run` (torchrun)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from autolrs.demo import DemoOptions, run_demo

    import torch

    torch.set_num_threads(max(1, min(args.threads, torch.get_num_threads())))
    run_demo(DemoOptions(run_dir=Path(args.run_dir), max_steps=args.steps, seed=args.seed,
                         preset=args.preset, progress=not args.no_progress))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (sub-commands demo and run)."""
    parser = argparse.ArgumentParser(prog="autolrs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small CNN on digits with AutoLRS (CPU, ~1 min)")
    demo.add_argument("--run-dir", default="runs/demo", help="output and resume folder")
    demo.add_argument("--steps", type=int, default=4000, help="optimizer-step budget")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--preset", choices=["default", "paper"], default="default")
    demo.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `autolrs` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"autolrs: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
