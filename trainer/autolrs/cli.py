"""The `autolrs` command: `autolrs demo` (the main job, local) and `autolrs run` (torchrun)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from autolrs.demo import DemoOptions, run_demo

    import torch

    torch.set_num_threads(max(1, min(args.threads, torch.get_num_threads())))
    run_demo(DemoOptions(run_dir=Path(args.run_dir), max_steps=args.steps, seed=args.seed,
                         preset=args.preset, progress=not args.no_progress))
    return 0


RUN_USAGE = "autolrs run [--run-dir DIR] [torchrun options] -- script.py [args]"
RUN_HELP = f"""usage: {RUN_USAGE}

Start a training script under torchrun (python -m torch.distributed.run) with the
AutoLRS environment set up.

  --run-dir DIR   local defaults: AUTOLRS_STORE_URL=file://DIR/store and
                  AUTOLRS_CHECKPOINT_DIR=DIR/checkpoints (variables already set win)
  other options before -- go to torchrun, e.g. --nproc-per-node=2 --master-port=29500;
  everything after -- is the script and its arguments, passed on verbatim.
"""


def run_command(argv: list[str], environ: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The torchrun command line and environment for `autolrs run [OPTIONS] -- SCRIPT ARGS`.

    Our options: ``--run-dir DIR`` (local defaults for the store and checkpoints when the
    AUTOLRS_* variables are unset). Every other option before ``--`` goes to torchrun.
    """
    if "--" not in argv:
        raise ValueError(f"usage: {RUN_USAGE}")
    split = argv.index("--")
    options, script = argv[:split], argv[split + 1:]
    if not script:
        raise ValueError("autolrs run: give the training script after --")
    env = dict(os.environ if environ is None else environ)
    run_dir = None
    torchrun_options: list[str] = []
    i = 0
    while i < len(options):
        if options[i] == "--run-dir":
            if i + 1 >= len(options):
                raise ValueError("autolrs run: --run-dir needs a folder")
            run_dir = Path(options[i + 1])
            i += 2
            continue
        if options[i].startswith("--run-dir="):
            run_dir = Path(options[i].split("=", 1)[1])
        else:
            torchrun_options.append(options[i])
        i += 1
    if run_dir is not None:
        env.setdefault("AUTOLRS_STORE_URL", f"file://{run_dir.resolve()}/store")
        env.setdefault("AUTOLRS_CHECKPOINT_DIR", str(run_dir.resolve() / "checkpoints"))
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "torch.distributed.run", *torchrun_options, *script]
    return command, env


def _run(argv: list[str]) -> int:
    options = argv[:argv.index("--")] if "--" in argv else argv
    if "-h" in options or "--help" in options:
        print(RUN_HELP, end="")
        return 0
    command, env = run_command(argv)
    os.execvpe(command[0], command, env)
    return 0  # not reached


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
    sub.add_parser("run", help=f"start a training script under torchrun: {RUN_USAGE}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `autolrs` console script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "run":
            return _run(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except ValueError as exc:
        print(f"autolrs: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
