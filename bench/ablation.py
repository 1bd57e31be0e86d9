"""``python -m bench ablation``: each of the default preset's changes switched off in turn,
measured against the targets of the committed quality run (bench/results/<task>.json)."""

from __future__ import annotations

import concurrent.futures as cf
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from bench import DEFAULT_OUT
from bench.machine import describe, machine_record
from bench.methods import MethodSpec, autolrs_method, refuse_taken_name
from bench.metrics import min_value, steps_to_target
from bench.runner import NotFinished, job_failure, run_job
from bench.tasks import get_task

BEST_BASELINE = "best tuned baseline"
# Its entry in EXTRA_VARIANTS: not AutoLRS overrides but a marker variant_method reads.
BEST_BASELINE_MARKER: dict[str, Any] = {"baseline": "best"}

# name -> AutoLRSConfig overrides on top of the default preset.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no keep-best-trial": {"keep_best_trial": False},
    "no early stop": {"early_stop_trials": False},
    "fixed k (no adaptive trials)": {"adaptive_trials": False},
    "no warm start": {"warm_start": False},
    "no risk-averse selection": {"risk_averse": False},
    "no bracketing": {"bracket_search": False},
    "early validation on (the previous default)": {"early_validation": True},
    "no LR-decay limit": {"max_lr_decay": 0.0},
    "forecast source val (not auto)": {"forecast_source": "val"},
    "no cooldown": {"cooldown": 0.0},
    "no trial-length floor": {"min_trial_steps": 1},
    "LR-decay limit 3 (not 2)": {"max_lr_decay": 3.0},
    "no LR range test": {"range_test": False},
    "no final-stage hold": {"hold_final_stage": False},
    "linear cooldown (not drop)": {"cooldown_shape": "linear"},
    "no saturation switch": {"saturation_validation": False},
    "no held-LR backoff": {"hold_backoff": False},
    "no floor ties": {"floor_ties": False},
}

# Selectable with --variants but not part of the ablation: the reference, for a many-seed
# comparison against the same committed targets.
EXTRA_VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {"preset": "paper"},
    # Earlier defaults, for the many-seed comparison. Before the LR range test, with
    # trials scored on validation loss from the first stage (and no hold, linear cooldown):
    "previous default": {"range_test": False, "early_validation": True,
                         "hold_final_stage": False, "cooldown_shape": "linear",
                         "saturation_validation": False, "hold_backoff": False,
                         "floor_ties": False},
    # Before the last stage's hold and the cooldown's drop:
    "default before the hold and the drop": {"hold_final_stage": False,
                                             "cooldown_shape": "linear",
                                             "saturation_validation": False,
                                             "hold_backoff": False, "floor_ties": False},
    # Before validation scoring once the training loss is forecast at zero:
    "default before the saturation switch": {"saturation_validation": False,
                                             "hold_backoff": False, "floor_ties": False},
    # Before the held-LR backoff and the floor ties:
    "default before the backoff": {"hold_backoff": False, "floor_ties": False},
    # Not AutoLRS: each task's best tuned baseline of the committed run (its kind and LR),
    # so a many-seed comparison shows how often the target's own source reaches it.
    BEST_BASELINE: BEST_BASELINE_MARKER,
}


def select_variants(names: str | None, extra: Sequence[MethodSpec] = (),
                    baselines: Sequence[tuple[str, dict[str, Any]]] = ()
                    ) -> dict[str, dict[str, Any]]:
    """The variants named in a comma-separated list (None: every ablation variant; ``all``
    in the list stands for them, as in ``all,paper``), then
    ``extra``: AutoLRS methods with any overrides (``--autolrs NAME:field=value``), named
    without their ``autolrs-`` prefix, then ``baselines``: (name, marker) pairs of
    ``--baseline NAME:KIND@LR``."""
    known = {**VARIANTS, **EXTRA_VARIANTS}
    if names is None:
        selected = dict(VARIANTS)
    else:
        given = [n.strip() for n in names.split(",") if n.strip()]
        chosen = [v for n in given for v in (VARIANTS if n == "all" else [n])]
        twice = [n for i, n in enumerate(chosen) if n in chosen[:i]]
        if twice:
            raise ValueError(f"--variants: variant {twice[0]!r} named twice"
                             + (" ('all' names it too)" if "all" in given else ""))
        unknown = [n for n in chosen if n not in known]
        if unknown or not chosen:
            raise ValueError(f"--variants: unknown variant "
                             f"{', '.join(unknown) or '(none given)'}; allowed: all, {', '.join(known)}")
        selected = {n: known[n] for n in chosen}
    added = ([("--autolrs", m.name.removeprefix("autolrs-"), m.overrides) for m in extra]
             + [("--baseline", name, marker) for name, marker in baselines])
    for option, name, overrides in added:
        refuse_taken_name(option, name, {**known, **selected}, "variant")
        selected[name] = dict(overrides)
    return selected


def variant_method(name: str, overrides: dict[str, Any], committed: dict[str, Any]) -> MethodSpec:
    """The method a variant runs on a task: AutoLRS with ``overrides``, (for
    BEST_BASELINE_MARKER) the committed run's best tuned baseline, read from its summary,
    or a ``--baseline`` marker's schedule at its LR."""
    if overrides == BEST_BASELINE_MARKER:
        best = committed["best_baseline"]
        figures = committed["methods"][best]
        return MethodSpec(figures["kind"], best, lr=figures["lr"])
    if "baseline" in overrides:
        return MethodSpec(overrides["baseline"], name, lr=overrides["lr"])
    return autolrs_method(name, overrides)


def committed_summaries(tasks: Sequence[str], results: Path) -> dict[str, dict[str, Any]]:
    """Each task's summary from the committed quality run (``results/<task>.json``): the
    target the ablation measures against. A missing or unreadable file is a one-line
    ValueError saying which file and how to make it."""
    from bench.report import read_json_object

    summaries = {}
    for task in tasks:
        get_task(task)  # an unknown task: a ValueError naming the known ones
        path = results / f"{task}.json"
        where = "" if results == DEFAULT_OUT else f" --out {results}"
        make = (f"make it with `python -m bench quality --tasks {task}{where}` (it writes "
                f"{results}/)")
        if not path.is_file():
            raise ValueError(f"ablation: no committed quality result {path} for task {task} "
                             f"(its target val loss is the ablation's target); {make}")
        document = read_json_object(path)
        if "summary" not in document:
            raise ValueError(f"ablation: {path} is not a quality result (no summary); {make}")
        summaries[task] = document["summary"]
    return summaries


def run_ablation(tasks: Sequence[str], seeds: Sequence[int], results: Path, jobs: int = 2,
                 log: Callable[[str], None] = print,
                 variants: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run every variant on every task and seed; summarise against each task's target.

    A job that raises stops no other; the result then lists it under ``failed``
    (``job_failure`` records with ``task``, ``variant`` and ``seed``), and ``split_failed``
    parts the variants that finished everywhere from those that did not. Ctrl-C cancels
    the queued jobs and returns at once with ``interrupted`` set: the rows that finished,
    and every job that did not under ``failed``."""
    from bench.quality import finished_result, job_pool, stop_now

    variants = dict(VARIANTS) if variants is None else variants
    summaries = committed_summaries(tasks, results)
    machine = machine_record()
    # Per variant: a merged file keeps rows of earlier runs, perhaps from another CPU.
    out: dict[str, Any] = {"variants": variants, "seeds": list(seeds), "tasks": {},
                           "machines": {name: machine for name in variants}}
    failed: list[dict[str, Any]] = []

    def add_row(rows: dict[str, list[dict[str, Any]]], name: str, seed: int,
                record: dict[str, Any], target: float) -> None:
        rows[name].append({
            "seed": seed,
            "steps_to_target": steps_to_target(record["curve"]["val_loss"], target),
            "min_val_loss": min_value(record["curve"]["val_loss"]),
            "final_val_loss": record["final_val_loss"],
            "trial_fraction": record["trial_steps"] / record["steps"],
            "discarded_fraction": (record["trial_steps"]
                                   - record.get("trial_steps_kept", 0)) / record["steps"]})

    def failure(task: str, name: str, seed: int, exc: BaseException) -> dict[str, Any]:
        return {**job_failure(f"{task} {name!r} seed {seed}", exc),
                "task": task, "variant": name, "seed": seed}

    with job_pool(jobs) as pool:
        for index, task in enumerate(tasks):
            committed = summaries[task]
            target = committed["target_val_loss"]
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
            # In the result from the start: Ctrl-C leaves the rows that finished.
            out["tasks"][task] = {"target_val_loss": target,
                                  "best_baseline": committed["best_baseline"],
                                  "variants": rows}
            futures: dict[cf.Future, tuple[str, int]] = {}
            seen: set[cf.Future] = set()
            try:
                for name, overrides in variants.items():
                    method = variant_method(name, overrides, committed).to_dict()
                    for seed in seeds:
                        futures[pool.submit(run_job, {"spec": get_task(task), "method": method,
                                                      "seed": seed})] = (name, seed)
                for future in cf.as_completed(futures):
                    seen.add(future)
                    name, seed = futures[future]
                    try:
                        record = future.result()
                    except Exception as exc:  # noqa: BLE001 - recorded, the other jobs go on
                        failed.append(failure(task, name, seed, exc))
                        log(f"ablation {task} {name} seed {seed}: FAILED: "
                            f"{failed[-1]['error']}")
                        continue
                    add_row(rows, name, seed, record, target)
                    log(f"ablation {task} {name} seed {seed}: final val loss "
                        f"{record['final_val_loss']:.4f}")
            except KeyboardInterrupt:
                stop_now(pool)
                out["interrupted"] = True
                for future, (name, seed) in futures.items():
                    if future in seen:
                        continue
                    ok, value = finished_result(future)
                    if ok:
                        add_row(rows, name, seed, value, target)
                    else:
                        failed.append(failure(task, name, seed, value))
                submitted = set(futures.values())  # --jobs 1: the rest were never submitted
                failed += [failure(task, name, seed, NotFinished()) for name in variants
                           for seed in seeds if (name, seed) not in submitted]
                failed += [failure(later, name, seed, NotFinished())
                           for later in tasks[index + 1:] for name in variants for seed in seeds]
            for name in rows:
                rows[name].sort(key=lambda x: x["seed"])
            if out.get("interrupted"):
                break
    if failed:
        out["failed"] = failed
    return out


def split_failed(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``result`` without the variants a job of which failed (what is left is complete:
    every seed on every task, ready to write or merge), and those variants' finished rows
    with the failures (None when nothing failed)."""
    failed = result.get("failed") or []
    broken = {f["variant"] for f in failed}
    if not broken:
        return {k: v for k, v in result.items() if k != "failed"}, None

    def part(keep: Callable[[str], bool]) -> dict[str, Any]:
        return {"variants": {n: o for n, o in result["variants"].items() if keep(n)},
                "seeds": result["seeds"],
                "tasks": {task: {**data, "variants": {n: rows for n, rows
                                                      in data["variants"].items() if keep(n)}}
                          for task, data in result["tasks"].items()},
                "machines": {n: m for n, m in result.get("machines", {}).items() if keep(n)}}

    return part(lambda n: n not in broken), {**part(lambda n: n in broken), "failed": failed}


def check_mergeable(previous: dict[str, Any], seeds: Sequence[int], tasks: Sequence[str],
                    targets: dict[str, float] | None = None) -> None:
    """Raise a one-line ValueError unless ``previous`` has exactly these seeds and tasks
    (and, given ``targets``, was measured against the same target of each task)."""
    if previous.get("seeds") != list(seeds) or set(previous.get("tasks", {})) != set(tasks):
        raise ValueError(
            f"--merge: the results to merge into have seeds {previous.get('seeds')} and tasks "
            f"{sorted(previous.get('tasks', {}))}; this run has seeds {list(seeds)} and "
            f"tasks {sorted(tasks)} (they must match)")
    for task, target in (targets or {}).items():
        theirs = previous["tasks"][task].get("target_val_loss")
        if theirs != target:
            raise ValueError(
                f"--merge: the results to merge into measured {task} against the target "
                f"val loss {theirs}; this run's is {target} (another quality run: --targets "
                "must name the one they used)")


def merge_ablation(previous: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the variants of ``previous`` it did not rerun kept (same seeds and
    tasks, else a one-line error): a variant added to a many-seed comparison without
    rerunning the others. A rerun variant replaces its old rows."""
    check_mergeable(previous, result["seeds"], list(result["tasks"]),
                    {task: data["target_val_loss"] for task, data in result["tasks"].items()})
    kept = {name: overrides for name, overrides in previous["variants"].items()
            if name not in result["variants"]}
    merged = {"variants": {**kept, **result["variants"]}, "seeds": result["seeds"], "tasks": {},
              "machines": {**{n: m for n, m in previous.get("machines", {}).items()
                              if n in kept}, **result.get("machines", {})}}
    for task, data in result["tasks"].items():
        old = previous["tasks"][task]["variants"]
        merged["tasks"][task] = {**data, "variants": {**{n: old[n] for n in kept},
                                                      **data["variants"]}}
    return merged


def ablation_table(result: dict[str, Any]) -> str:
    """Markdown: per task and variant, seeds reaching the target (and their mean steps when
    all do), each seed's lowest val loss (mean, and the worst seed's), final loss,
    trial-step share (all, and discarded: not kept by exploit)."""
    lines = ["| task | variant | seeds reaching target (steps) | mean steps to target "
             "| lowest val loss: mean (worst seed) "
             "| final val loss (mean ± std) | trial steps: all / discarded (max over seeds) |",
             "|---|---|---|---|---|---|---|"]
    for task, data in result["tasks"].items():
        for name, rows in data["variants"].items():
            reached = [r["steps_to_target"] for r in rows if r["steps_to_target"] is not None]
            lowest = [r["min_val_loss"] for r in rows if r.get("min_val_loss") is not None]
            lowest_text = (f"{statistics.mean(lowest):.4f} ({max(lowest):.4f})"
                           if len(lowest) == len(rows) else "–")
            finals = [r["final_val_loss"] for r in rows]
            spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
            share = [r["trial_fraction"] for r in rows]
            discarded = [r.get("discarded_fraction", r["trial_fraction"]) for r in rows]
            mean_steps = (f"{statistics.mean(reached):.0f}" if len(reached) == len(rows)
                          else "–")
            lines.append(f"| {task} | {name} | {len(reached)}/{len(rows)} "
                         f"({', '.join(map(str, reached)) or '-'}) | {mean_steps} | "
                         f"{lowest_text} | {statistics.mean(finals):.4f} ± {spread:.4f} | "
                         f"{statistics.mean(share):.0%} / {statistics.mean(discarded):.0%} "
                         f"({max(share):.0%} / {max(discarded):.0%}) |")
    return "\n".join(lines) + "\n" + machines_note(result)


def machines_note(result: dict[str, Any]) -> str:
    """Which machine ran which variants (rows compare bit for bit only within one machine);
    files from before the record name none."""
    machines = result.get("machines") or {}
    if not machines:
        return ""
    groups: dict[str, list[str]] = {}
    for name in result.get("variants", machines):
        machine = machines.get(name)
        groups.setdefault(describe(machine) if machine else "not recorded", []).append(name)
    return "\n" + "".join(f"Measured on {where}: {', '.join(names)}.\n"
                          for where, names in groups.items())


def write_ablation(result: dict[str, Any], out: Path) -> None:
    """ablation.json and ablation.md in ``out`` (bench/results/ unless --out says otherwise)."""
    from autolrs.atomic import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / "ablation.json", result)
    atomic_write_bytes(out / "ablation.md", ablation_table(result).encode())


def clear_incomplete(out: Path, finished: set[str]) -> None:
    """Remove ``ablation.incomplete.json`` from ``out`` once every variant it records has
    finished (in ``finished``); one that still names others stays."""
    from bench.report import read_json_object

    path = out / "ablation.incomplete.json"
    if path.exists() and set(read_json_object(path).get("variants", {})) <= finished:
        path.unlink()


def write_incomplete(incomplete: dict[str, Any], out: Path) -> Path:
    """``ablation.incomplete.json`` in ``out``: the failed variants' finished rows and the
    failures with their tracebacks (``split_failed``); returns its path."""
    from autolrs.atomic import atomic_write_json

    path = out / "ablation.incomplete.json"
    atomic_write_json(path, incomplete)
    return path
