"""``python -m bench [all|quality|cost|report|ablation]``: run the benchmarks and write
bench/results/."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from bench import DEFAULT_OUT

DOCS = Path("docs/bench.md")


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, like the other errors of the command; exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"bench: error: {message} (see python -m bench --help)\n")


def positive_int(text: str) -> int:
    """argparse type of ``--seeds`` and ``--jobs``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def task_names(text: str) -> list[str]:
    """argparse type of ``--tasks``: comma-separated bench tasks, at least one, none twice."""
    from bench.tasks import TASKS

    names = [name.strip() for name in text.split(",") if name.strip()]
    allowed = f"allowed: {', '.join(TASKS)}"
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown task {', '.join(map(repr, unknown))}; {allowed}")
    if not names:
        raise argparse.ArgumentTypeError(f"no task given in {text!r}; {allowed}")
    twice = [name for i, name in enumerate(names) if name in names[:i]]
    if twice:
        raise argparse.ArgumentTypeError(f"task {twice[0]!r} given twice")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line (see ``--help``)."""
    parser = _Parser(prog="python -m bench", description=__doc__)
    parser.add_argument("command", nargs="?", default="all",
                        choices=["all", "quality", "cost", "report", "ablation"],
                        help="all (default): quality runs, cost figures, then the report; "
                             "ablation: the default preset's changes switched off one by one, "
                             "against the committed quality targets")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (~1 min): short budgets, 1 seed, small cost model; "
                             "writes to bench/results/quick unless --out is given")
    parser.add_argument("--tasks", type=task_names, default="digits,mnist1d,charlm",
                        help="comma-separated tasks (digits, mnist1d, charlm)")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="seeds per method, >= 1 (default 3, quick 1)")
    parser.add_argument("--jobs", type=positive_int, default=2,
                        help="worker processes (1 thread each), >= 1; 1 runs every job in "
                             "this process")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--autolrs", action="append", default=[], metavar="NAME:FIELD=V,...",
                        help="an extra AutoLRS method with AutoLRSConfig overrides, e.g. "
                             "'no-keep:keep_best_trial=false' (repeatable); with ablation, an "
                             "extra variant beside those --variants selects")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME:KIND@LR",
                        help="ablation: an extra variant running a baseline schedule (constant, "
                             "cosine, onecycle, step) at LR, e.g. 'const 0.002:constant@0.002' "
                             "(repeatable)")
    parser.add_argument("--no-presets", action="store_true",
                        help="skip the autolrs-paper and autolrs-default methods")
    parser.add_argument("--variants", default=None, metavar="NAME,...",
                        help="ablation: only these variants (names as in bench/ablation.py, "
                             "or 'paper'), e.g. --variants default,paper --seeds 12")
    parser.add_argument("--merge", action="store_true",
                        help="ablation: keep the variants already in --out's ablation.json that "
                             "this run does not rerun (same seeds and tasks)")
    parser.add_argument("--targets", type=Path, default=None, metavar="DIR",
                        help="ablation: the quality run whose targets (each task's best tuned "
                             "baseline's worst lowest val loss) it measures against "
                             "(default: bench/results), e.g. a run made on the same machine")
    parser.add_argument("--device", action="append", default=None, choices=["cpu", "cuda"],
                        help="cost: devices for snapshot and step-overhead figures "
                             "(default: cpu, plus cuda when available)")
    return parser


# Options that mean something to some commands only: given to another, they would be
# silently ignored, so they are refused (argparse dest -> commands that use it).
OPTION_COMMANDS = {
    "baseline": ("ablation",), "variants": ("ablation",), "merge": ("ablation",),
    "targets": ("ablation",),
    "no_presets": ("all", "quality"), "device": ("all", "cost"),
    "autolrs": ("all", "quality", "ablation"), "seeds": ("all", "quality", "ablation"),
}


def check_options_apply(args: argparse.Namespace) -> None:
    """A one-line ValueError for the first option given that the command does not use."""
    for dest, commands in OPTION_COMMANDS.items():
        value = getattr(args, dest)
        if value not in (None, False, []) and args.command not in commands:
            flag = "--" + dest.replace("_", "-")
            if dest == "baseline":
                raise ValueError("--baseline adds an ablation variant: use it with the ablation "
                                 "command (quality already runs every baseline)")
            names = commands[0] if len(commands) == 1 else \
                f"{', '.join(commands[:-1])} and {commands[-1]} commands"
            raise ValueError(f"{flag} applies to the {names}{' command' if len(commands) == 1 else ''}, "
                             f"not {args.command!r}")


def log(text: str) -> None:
    """Progress lines, flushed (the full bench is usually run with its output in a file)."""
    print(text, flush=True)


def print_error(message: Any, status: int) -> int:
    """Print ``bench: error: MESSAGE`` on stderr; return ``status`` (2: the input given
    cannot be used; 1: jobs of the run failed; 130: interrupted by Ctrl-C)."""
    print(f"bench: error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    from bench.methods import parse_autolrs_option, parse_baseline_option, quality_methods
    from bench.runner import Interrupted, JobsFailed

    out = args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    tasks = args.tasks
    try:
        extra = [parse_autolrs_option(text) for text in args.autolrs]
        baselines = [parse_baseline_option(text) for text in args.baseline]
        check_options_apply(args)
        methods = (quality_methods(extra, presets=not args.no_presets)
                   if args.command in ("all", "quality") else [])
        if args.command in ("all", "cost"):
            from bench.cost import check_devices

            check_devices(args.device)
    except ValueError as exc:
        return print_error(exc, 2)
    started = time.perf_counter()
    if args.command == "ablation":
        return ablation_command(args, tasks, seeds, extra, baselines, out)
    if args.command in ("all", "quality"):
        from bench.quality import run_quality
        from bench.tasks import get_task

        try:
            run_quality([get_task(t, args.quick) for t in tasks], seeds, is_quick=args.quick,
                        jobs=args.jobs, autolrs_methods=methods, out_dir=out, log=log)
        except Interrupted as exc:
            return print_error(exc, 130)
        except JobsFailed as exc:
            return print_error(exc, 1)
    if args.command in ("all", "cost"):
        from bench.cost import QUICK, CostSettings, run_cost, write_cost

        write_cost(run_cost(QUICK if args.quick else CostSettings(), args.device, log=log), out)
    from bench.report import write_report

    docs = DOCS if out == DEFAULT_OUT and DOCS.parent.is_dir() else None
    try:
        write_report(out, docs_path=docs, quick=args.quick)
    except ValueError as exc:
        return print_error(exc, 2)
    print(f"bench: wrote {out}/ in {time.perf_counter() - started:.0f}s"
          + (f" and {docs}" if docs else ""))
    return 0


def ablation_command(args: argparse.Namespace, tasks: list[str], seeds: list[int],
                     extra: list[Any], baselines: list[Any], out: Path) -> int:
    """The ablation command: check everything first, run, then write the variants that
    finished (merged with --merge) and, if jobs failed, the rest beside them."""
    from bench.ablation import (
        ablation_table,
        check_mergeable,
        clear_incomplete,
        committed_summaries,
        merge_ablation,
        run_ablation,
        select_variants,
        split_failed,
        write_ablation,
        write_incomplete,
    )
    from bench.report import read_json_object
    from bench.runner import failures_message, jobs_count

    previous_path = out / "ablation.json"
    try:
        variants = select_variants(args.variants, extra, baselines)
        targets = args.targets or DEFAULT_OUT
        summaries = committed_summaries(tasks, targets)
        previous = None
        if args.merge:
            if not previous_path.exists():
                raise ValueError(f"--merge: no {previous_path} to merge into")
            previous = read_json_object(previous_path)
            check_mergeable(previous, seeds, tasks,
                            {task: summary["target_val_loss"]
                             for task, summary in summaries.items()})
    except ValueError as exc:
        return print_error(exc, 2)
    ran = run_ablation(tasks, seeds, targets, jobs=args.jobs, log=log, variants=variants)
    if ran.get("interrupted"):
        # A part of a run is no table: ablation.json stays as it was, whatever finished.
        path = write_incomplete(ran, out)
        return print_error(f"interrupted: {jobs_count(len(ran['failed']))} failed or did not "
                           f"finish; left {previous_path} as it was; the rows that finished are in "
                           f"{path}", 130)
    result, incomplete = split_failed(ran)
    if result["variants"]:
        if previous is not None:
            result = merge_ablation(previous, result)
        write_ablation(result, out)
        print(ablation_table(result))
    if incomplete is None:
        clear_incomplete(out, set(result["variants"]))
        return 0
    path = write_incomplete(incomplete, out)
    written = (f"wrote the variants that finished to {previous_path}; "
               if result["variants"] else f"left {previous_path} as it was; ")
    return print_error(f"{failures_message(incomplete['failed'])}; {written}the failed "
                       f"variants' finished rows and each failure's traceback are in {path}", 1)


if __name__ == "__main__":
    sys.exit(main())
