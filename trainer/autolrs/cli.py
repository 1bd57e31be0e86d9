"""The `autolrs` command: `autolrs demo` (the main job, local) and `autolrs run` (torchrun)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn


def _demo(args: argparse.Namespace) -> int:
    from autolrs.demo import DemoOptions, run_demo
    from autolrs.stores.base import StaleWriterError

    import torch

    run_dir = Path(args.run_dir)
    make_run_dir(run_dir)
    torch.set_num_threads(args.threads)
    try:
        run_demo(DemoOptions(run_dir=run_dir, max_steps=args.steps, seed=args.seed,
                             preset=args.preset, progress=not args.no_progress))
    except StaleWriterError as exc:
        print(f"autolrs: error: --run-dir {run_dir}: another process is writing this run "
              f"({exc}); let it finish, or use another --run-dir", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nautolrs: interrupted; the same command resumes {run_dir} from its last "
              "checkpoint", file=sys.stderr)
        return 130
    return 0


def make_run_dir(path: Path) -> None:
    """Create the demo's run folder (or find it, to resume); a path that is not a folder
    and cannot become a writable one is a one-line ValueError naming --run-dir."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--run-dir {path}: exists and is not a folder; give a folder "
                         "(a new one, or that of a run to resume)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--run-dir {path}: cannot create the folder "
                         f"({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--run-dir {path}: the folder is not writable here")


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high) (no upper bound when ``high`` is None)."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high})"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if value < low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def _folder(text: str) -> str:
    """An argparse type: a folder path, not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("needs a folder, got an empty path")
    return text


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, like the command's other errors (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"autolrs: error: {message} (see {self.prog} --help)\n")


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
    parser = OneLineErrorParser(prog="autolrs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small CNN on digits with AutoLRS (CPU, ~30 s on 2 cores)")
    demo.add_argument("--run-dir", type=_folder, default="runs/demo",
                      help="output and resume folder (a run resumes only with the settings "
                           "it was started with)")
    demo.add_argument("--steps", type=_int_in(1), default=4000,
                      help="optimizer-step budget, >= 1")
    demo.add_argument("--seed", type=_int_in(0, 2**32), default=0,
                      help="random seed, in [0, 2**32)")
    demo.add_argument("--preset", choices=["default", "paper"], default="default")
    demo.add_argument("--threads", type=_int_in(1), default=2,
                      help="torch CPU threads, >= 1")
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
    except OSError as exc:  # a write that failed (disk full, permissions), torchrun missing
        print(f"autolrs: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
