"""Markdown tables from the result files: ``bench/results/README.md`` and ``docs/bench.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autolrs.atomic import atomic_write_bytes
from autolrs.engine import backoff

from bench.machine import describe

TASK_ORDER = ("digits", "mnist1d", "charlm")


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (a bench result file); unreadable, not JSON or not an
    object: a one-line ValueError naming the file."""
    fix = "rewrite it with the bench command that made it, or move it away"
    try:
        document = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}): {fix}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (not UTF-8 text at byte {exc.start}): "
                         f"{fix}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a bench result (a JSON object) but a JSON "
                         f"{type(document).__name__}: {fix}")
    return document


def load_results(out_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Every ``<task>.json`` in ``out_dir`` (known tasks first) and ``cost.json`` if present;
    a file that is not JSON is a one-line ValueError naming it."""
    results = {}
    names = sorted(p.stem for p in out_dir.glob("*.json") if p.stem != "cost")
    for name in sorted(names, key=lambda n: (TASK_ORDER.index(n) if n in TASK_ORDER else 99, n)):
        document = read_json_object(out_dir / f"{name}.json")
        if "summary" in document:  # a task's quality result (not ablation.json)
            results[name] = document
    cost_path = out_dir / "cost.json"
    cost = read_json_object(cost_path) if cost_path.exists() else None
    return results, cost


def _pm(spread: dict[str, Any], digits: int = 4, scale: float = 1.0) -> str:
    if spread["n"] == 0:
        return "not reached"
    text = f"{spread['mean'] * scale:.{digits}f} ± {spread['std'] * scale:.{digits}f}"
    if spread["n"] < spread["of"]:
        text += f" ({spread['n']}/{spread['of']} seeds)"
    return text


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def headline_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per task: target, steps of the best baseline and of each AutoLRS method."""
    autolrs_names: list[str] = []
    for result in results.values():
        for name, figures in result["summary"]["methods"].items():
            if figures["kind"] == "autolrs" and name not in autolrs_names:
                autolrs_names.append(name)
    header = ["task", "budget", "best tuned baseline", "target val loss", "its steps"]
    header += [f"{n} steps (ratio)" for n in autolrs_names]
    header += [f"{n} fewer steps?" for n in autolrs_names]
    challengers = [n for n in autolrs_names if n != "autolrs-paper"]
    header += [f"{n} fewer steps than autolrs-paper?" for n in challengers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, result in results.items():
        summary = result["summary"]
        methods = summary["methods"]
        best = methods[summary["best_baseline"]]
        row = [task, str(result["settings"]["budget"]), summary["best_baseline"],
               f"{summary['target_val_loss']:.4f}", _pm(best["steps_to_target"], 0)]
        for name in autolrs_names:
            figures = methods.get(name)
            row.append("–" if figures is None else
                       f"{_pm(figures['steps_to_target'], 0)} "
                       f"({_ratio(figures['ratio_to_best_baseline']['steps_to_target'])})")
        for name in autolrs_names:
            verdict = summary["autolrs_fewer_steps_than_best_baseline"].get(name)
            row.append("–" if verdict is None else ("yes" if verdict else "no"))
        for name in challengers:
            verdict = summary.get("autolrs_fewer_steps_than_paper", {}).get(name)
            row.append("–" if verdict is None else ("yes" if verdict else "no"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def task_table(result: dict[str, Any]) -> str:
    """Every method of one task: steps to target, final loss and accuracy, wall time, ratios."""
    summary = result["summary"]
    header = ["method", "steps to target", "ratio", "final val loss", "ratio",
              "final val acc", "wall s", "ratio", "trial steps (all / discarded)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    methods = summary["methods"]
    order = sorted(methods, key=lambda n: (methods[n]["grid"], methods[n]["kind"] == "autolrs",
                                           methods[n]["lr"] or 0, n))
    for name in order:
        m = methods[name]
        r = m["ratio_to_best_baseline"]
        label = f"**{name}**" if name == summary["best_baseline"] else name
        if m["kind"] != "autolrs" and not m["grid"] and m["lr"] is not None:
            label += f" (lr {m['lr']:g})"
        trial = m["trial_step_fraction"]
        lines.append("| " + " | ".join([
            label, _pm(m["steps_to_target"], 0), _ratio(r["steps_to_target"]),
            _pm(m["final_val_loss"]), _ratio(r["final_val_loss"]),
            _pm(m["final_val_accuracy"], 4), _pm(m["wall_seconds"], 1), _ratio(r["wall_seconds"]),
            "–" if m["kind"] != "autolrs" else _share(trial, m.get("discarded_trial_step_fraction")),
        ]) + " |")
    return "\n".join(lines)


def _share(trial: dict[str, Any], discarded: dict[str, Any] | None) -> str:
    """Trial-step share over seeds as mean (max), and the discarded part the same way."""
    text = f"{trial['mean']:.0%} (max {trial['max']:.0%})"
    if discarded is not None and discarded["n"]:
        text += f" / {discarded['mean']:.0%} (max {discarded['max']:.0%})"
    return text


def stage_table(result: dict[str, Any]) -> str:
    """The AutoLRS stages of seed 0 of each AutoLRS method: LR chosen, trials, steps."""
    lines = ["| method | stage | start | tau | trials (done/early/diverged) | search steps "
             "| chosen LR | forecast | reached |", "|---|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        if run["kind"] != "autolrs" or run["seed"] != result["seeds"][0]:
            continue
        for stage in run["history"]:
            trials = stage["trials"]
            counts = [sum(t["outcome"] == o for t in trials)
                      for o in ("completed", "early_stopped", "diverged")]
            lines.append("| " + " | ".join([
                run["method"], str(stage["stage"]), str(stage["start_step"]), str(stage["tau"]),
                "/".join(map(str, counts)),
                str(stage.get("search_steps", sum(t["steps"] for t in trials))),
                _lr(stage),
                _num(stage.get("predicted_loss")), _num(stage.get("actual_loss")),
            ]) + (" (cut by budget)" if stage.get("incomplete") else "") + " |")
    return "\n".join(lines)


def _lr(stage: dict[str, Any]) -> str:
    """The stage's LR; a cooldown's as start -> LR of its first step (when it drops at
    once) .. LR of its last step; a stage held without a search says so, and where its
    climbing loss halved the LR (``hold_backoff``)."""
    if stage.get("lr") is None:
        return "–"
    if stage.get("cooldown") and stage.get("end_lr") is not None:
        first = stage.get("first_lr")
        drop = f" -> {first:.3g}" if first is not None and first != stage["lr"] else ""
        return f"{stage['lr']:.3g}{drop} .. {stage['end_lr']:.2g} (cooldown)"
    if stage.get("no_search"):
        backoffs = stage.get("backoffs") or []
        if not backoffs:
            return f"{stage['lr']:.3g} (held: {stage['no_search']})"
        return (f"{backoffs[0]['from_lr']:.3g} -> {stage['lr']:.3g} (held: "
                f"{stage['no_search']}; {backoff.describe(backoffs)})")
    return f"{stage['lr']:.3g}"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def cost_table(cost: dict[str, Any]) -> str:
    """The cost figures against their targets."""
    bo, snap, over = cost["bo"], cost["snapshot"], cost["exploit_overhead"]
    t = cost["targets"]
    rows = [("BO decision (GP fit + ask), paper preset (L-BFGS acquisition)",
             f"{bo['paper']['propose']['median_ms']:.1f} ms", f"< {t['bo_decision_ms']:g} ms"),
            ("BO decision (GP fit + ask), default preset (sampled acquisition)",
             f"{bo['default']['propose']['median_ms']:.1f} ms", f"< {t['bo_decision_ms']:g} ms"),
            ("default preset's 'keep searching?' check (its own GP fit here; the "
             "controller shares it with the next proposal)",
             f"{bo['default']['lower_bound_check']['median_ms']:.1f} ms", "–")]
    for preset, figures in cost["controller"].items():
        rows.append((f"whole controller step ending a trial ({preset}: forecast, BO, checks)",
                     f"{figures['trial_end']['median_ms']:.1f} ms", "–"))
    for length, figures in cost["forecast"].items():
        rows.append((f"forecast of a {length}-step trial", f"{figures['median_ms']:.2f} ms", "–"))
    for device, s in snap.items():
        rows.append((f"snapshot+restore, {s['parameters'] / 1e6:.1f}M params + Adam state "
                     f"({s['bytes'] / 2**20:.0f} MiB), {device}",
                     f"{s['capture']['median_ms']:.1f} + {s['restore']['median_ms']:.1f} ms = "
                     f"{s['ratio_to_flat_copy']:.2f}x two raw copies "
                     f"({s['raw_flat_copy']['median_ms']:.1f} ms each)",
                     f"<= {t['snapshot_ratio']:g}x"))
    for device, o in over.items():
        rows.append((f"sched.step() in exploit vs a bare step, {o['model']}, {device}",
                     f"{o['sched_step_call']['median_ms'] * 1e3:.1f} µs / "
                     f"{o['bare_step']['median_ms']:.2f} ms = {o['overhead_fraction']:.2%} "
                     f"(A/B loop ratio {o['loop_ratio']:.3f})",
                     f"< {t['exploit_overhead_fraction']:.0%}"))
    redis = cost.get("redis", {})
    if "ratio_to_ping" in redis:
        rows.append((f"Redis writes per decision (RedisStore, {redis['state_json_bytes']} B "
                     "state) vs loopback PING",
                     f"{redis['per_decision']['median_ms']:.3f} ms vs "
                     f"{redis['ping']['median_ms']:.3f} ms = {redis['ratio_to_ping']:.1f}x", "–"))
    elif "error" in redis:
        rows.append(("Redis writes per decision", f"not measured: {redis['error']}", "–"))
    if "cuda" in cost:
        rows.append(("CUDA snapshot/restore and step overhead", cost["cuda"], "–"))
    lines = ["| figure (median) | measured | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def render(results: dict[str, dict[str, Any]], cost: dict[str, Any] | None,
           image_prefix: str = "") -> str:
    """The tables (headline, per task with figure link and stages, cost) as markdown."""
    parts = []
    if results:
        seeds = sorted({len(r["seeds"]) for r in results.values()})
        parts.append("### Steps to the target validation loss\n\nTrial steps count: AutoLRS "
                     "is charged every optimizer step it takes. Mean ± std over "
                     f"{'/'.join(map(str, seeds))} seeds; ratio = mean / mean of the best tuned "
                     "baseline in the same run." + _measured_on(results) + "\n\n"
                     + headline_table(results))
    for task, result in results.items():
        s = result["settings"]
        parts.append(
            f"### {task}\n\n{s['description']}. Budget {s['budget']} optimizer steps, "
            f"validation every {s['eval_every']} steps, constant-LR grid "
            f"{', '.join(f'{v:g}' for v in s['lr_grid'])} (best: {result['best_constant_lr']:g}), "
            f"AutoLRS interval [{s['min_lr']:g}, {s['max_lr']:g}], tau {s['tau']}, "
            f"tau_max {s['tau_max']}.\n\n![{task}]({image_prefix}{task}.png)\n\n"
            + task_table(result) + "\n\nAutoLRS stages (first seed):\n\n" + stage_table(result))
    if cost is not None:
        m = cost["machine"]
        parts.append(f"### Cost of the machinery\n\nMeasured on {describe(m)}, 1 CPU thread, "
                     f"{m['measured_at']}.\n\n" + cost_table(cost))
    return "\n\n".join(parts) + "\n"


def _measured_on(results: dict[str, dict[str, Any]]) -> str:
    """" Measured on ..." for the machines the quality files name (none: older files)."""
    machines = sorted({describe(r["machine"]) for r in results.values() if r.get("machine")})
    if not machines:
        return ""
    return (f" Measured on {'; '.join(machines)}: runs repeat bit for bit on one machine, "
            "not across CPUs (see docs/bench.md, Reproduce).")


def write_report(out_dir: Path, docs_path: Path | None = None, quick: bool = False) -> str:
    """Write ``out_dir/README.md`` (and ``docs_path`` with links into ``out_dir``); a folder
    with nothing to report is a one-line ValueError naming it."""
    if not out_dir.is_dir():
        raise ValueError(f"no results to report: {out_dir}/ is not a folder (give --out the "
                         "folder a quality or cost run wrote)")
    results, cost = load_results(out_dir)
    if not results and cost is None:
        raise ValueError(f"no results to report in {out_dir}/: no <task>.json with a summary "
                         "and no cost.json (run `python -m bench quality` or `python -m bench "
                         "cost` with this --out first)")
    check_renderable(out_dir, results, cost)
    title = "# Benchmark results" + (" (quick smoke run: not the real figures)" if quick else "")
    intro = (f"{title}\n\nReproduce with `make bench` (`python -m bench`); "
             "see docs/bench.md for what each figure means.\n\n")
    text = intro + render(results, cost)
    atomic_write_bytes(out_dir / "README.md", text.encode())
    if docs_path is not None:
        header = docs_path.read_text().split(GENERATED_MARK)[0] if docs_path.exists() else ""
        prefix = "../" + out_dir.as_posix().rstrip("/") + "/"
        body = header + GENERATED_MARK + "\n\n" + render(results, cost, image_prefix=prefix)
        atomic_write_bytes(docs_path, body.encode())
    return text


def check_renderable(out_dir: Path, results: dict[str, dict[str, Any]],
                     cost: dict[str, Any] | None) -> None:
    """A one-line ValueError naming the first file whose JSON is not a result this bench
    can report (another schema, or fields missing), instead of a KeyError traceback."""
    from bench.quality import SCHEMA_VERSION

    pieces = [(f"{name}.json", {name: result}, None) for name, result in results.items()]
    pieces += [("cost.json", {}, cost)] if cost is not None else []
    for filename, tasks, cost_part in pieces:
        document = cost_part if cost_part is not None else next(iter(tasks.values()))
        problem = None
        if document.get("schema") != (1 if cost_part is not None else SCHEMA_VERSION):
            problem = f"schema {document.get('schema')!r}, this bench reads {SCHEMA_VERSION}"
        else:
            try:
                render(tasks, cost_part)
            except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            raise ValueError(f"{out_dir / filename} is not a result this bench can report "
                             f"({problem}); write it again with `python -m bench`")


GENERATED_MARK = "<!-- tables below are generated by `python -m bench report` -->"
