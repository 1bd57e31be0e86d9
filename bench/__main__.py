"""``python -m bench [all|quality|cost|report]``: run the benchmarks and write bench/results/."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path("bench/results")
DOCS = Path("docs/bench.md")


def build_parser() -> argparse.ArgumentParser:
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("command", nargs="?", default="all",
                        choices=["all", "quality", "cost", "report", "ablation"],
                        help="all (default): quality runs, cost figures, then the report; "
                             "ablation: the default preset's changes switched off one by one, "
                             "against the committed quality targets")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (~1 min): short budgets, 1 seed, small cost model; "
                             "writes to bench/results/quick unless --out is given")
    parser.add_argument("--tasks", default="digits,mnist1d,charlm",
                        help="comma-separated tasks (digits, mnist1d, charlm)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per method (default 3, quick 1)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1 thread each)")
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
    parser.add_argument("--device", action="append", default=None, choices=["cpu", "cuda"],
                        help="cost: devices for snapshot and step-overhead figures "
                             "(default: cpu, plus cuda when available)")
    return parser


def log(text: str) -> None:
    """Progress lines, flushed (the full bench is usually run with its output in a file)."""
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    from bench.methods import default_autolrs_methods, parse_autolrs_option, parse_baseline_option

    try:
        extra = [parse_autolrs_option(text) for text in args.autolrs]
        baselines = [parse_baseline_option(text) for text in args.baseline]
        if baselines and args.command != "ablation":
            raise ValueError("--baseline adds an ablation variant: use it with the ablation "
                             "command (quality already runs every baseline)")
    except ValueError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    started = time.perf_counter()
    if args.command == "ablation":
        from bench.ablation import (
            ablation_table,
            check_mergeable,
            merge_ablation,
            run_ablation,
            select_variants,
            write_ablation,
        )

        previous_path = out / "ablation.json"
        try:
            variants = select_variants(args.variants, extra, baselines)
            previous = None
            if args.merge:
                if not previous_path.exists():
                    raise ValueError(f"--merge: no {previous_path} to merge into")
                previous = json.loads(previous_path.read_text())
                check_mergeable(previous, seeds, tasks)
        except ValueError as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 2
        result = run_ablation(tasks, seeds, DEFAULT_OUT, jobs=args.jobs, log=log,
                              variants=variants)
        if previous is not None:
            result = merge_ablation(previous, result)
        write_ablation(result, out)
        print(ablation_table(result))
        return 0
    if args.command in ("all", "quality"):
        from bench.quality import run_quality
        from bench.tasks import get_task

        methods = ([] if args.no_presets else default_autolrs_methods()) + extra
        try:
            run_quality([get_task(t, args.quick) for t in tasks], seeds, is_quick=args.quick, jobs=args.jobs,
                        autolrs_methods=methods, out_dir=out, log=log)
        except ValueError as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 2
    if args.command in ("all", "cost"):
        from bench.cost import QUICK, CostSettings, run_cost, write_cost

        write_cost(run_cost(QUICK if args.quick else CostSettings(), args.device, log=log), out)
    from bench.report import write_report

    docs = DOCS if out == DEFAULT_OUT and DOCS.parent.is_dir() else None
    write_report(out, docs_path=docs, quick=args.quick)
    print(f"bench: wrote {out}/ in {time.perf_counter() - started:.0f}s"
          + (f" and {docs}" if docs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
