"""`autolrs demo`: AutoLRS on scikit-learn's digits with a small CNN, on CPU, no download.

Writes ``runs/<name>/history.jsonl``, ``summary.json`` and ``schedule.png`` and compares
the final validation accuracy with a constant-LR run of the same step budget. Started
again with the same run folder, an interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autolrs.atomic import atomic_write_bytes, atomic_write_json
from autolrs.config import AutoLRSConfig
from autolrs.engine import backoff
from autolrs.plot import plot_schedule
from autolrs.scheduler import AutoLRS
from autolrs.stores.file import FileStore
from autolrs.tasks.digits import digits_task
from autolrs.tasks.loop import Curve, train

CHECKPOINT_EVERY = 500
SETTINGS_FILE = "settings.json"
NOT_SETTINGS = ("run_dir", "progress")  # where a run is written and how it is shown
FLAGS = {"max_steps": "--steps", "seed": "--seed", "preset": "--preset"}  # of `autolrs demo`


@dataclass
class DemoOptions:
    """What `autolrs demo` runs."""

    run_dir: Path = Path("runs/demo")
    max_steps: int = 4000
    seed: int = 0
    preset: str = "default"
    min_lr: float = 1e-3
    max_lr: float = 1.0
    tau: int = 200
    tau_max: int = 1600
    progress: bool = True


def run_settings(opts: DemoOptions) -> dict[str, Any]:
    """What defines a run (every option but where it is written and how it is shown): a
    run folder resumes only under the same settings."""
    return {name: value for name, value in asdict(opts).items() if name not in NOT_SETTINGS}


def claim_run_dir(opts: DemoOptions) -> None:
    """Record the run's settings in a new run folder, or check that a folder being resumed
    was made with the same ones: else a one-line ValueError naming those that differ."""
    path = opts.run_dir / SETTINGS_FILE
    settings = run_settings(opts)
    fresh = "use a fresh --run-dir for a new run"
    if not path.exists():
        if (opts.run_dir / "checkpoint.pt").exists() or (opts.run_dir / "store").exists():
            raise ValueError(f"--run-dir {opts.run_dir} holds a run without {SETTINGS_FILE} "
                             f"(made by an older autolrs demo), so it cannot be resumed "
                             f"safely: remove it (rm -r {opts.run_dir}) or {fresh}")
        atomic_write_json(path, settings)
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--run-dir {opts.run_dir}: cannot read {path} ({exc}): "
                         f"{fresh}") from None
    if not isinstance(saved, dict):
        raise ValueError(f"--run-dir {opts.run_dir}: {path} is not a settings object: {fresh}")
    differing = [f"{FLAGS.get(name, name)} {saved.get(name)!r} there, {value!r} now"
                 for name, value in settings.items() if saved.get(name) != value]
    if differing:
        raise ValueError(f"--run-dir {opts.run_dir} holds a run made with other settings "
                         f"({'; '.join(differing)}): {fresh}, or the same settings to "
                         "resume it")


def _config(opts: DemoOptions) -> AutoLRSConfig:
    return AutoLRSConfig(min_lr=opts.min_lr, max_lr=opts.max_lr, tau=opts.tau,
                         tau_max=opts.tau_max, max_steps=opts.max_steps, seed=opts.seed,
                         preset=opts.preset)


def _save_checkpoint(path: Path, step: int, model, optimizer, sched: AutoLRS, curve: Curve) -> None:
    buffer = io.BytesIO()
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "autolrs": sched.state_dict(), "curve": curve.to_dict(),
                "torch_rng": torch.get_rng_state()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint means: start over
        print(f"warning: ignoring unreadable checkpoint {path}: {exc}")
        return None


def run_autolrs(opts: DemoOptions) -> tuple[AutoLRS, Curve, float]:
    """Train with AutoLRS, checkpointing to the run folder; resume if a checkpoint exists
    (only under the settings the folder was made with: ``claim_run_dir``)."""
    claim_run_dir(opts)
    task = digits_task(seed=opts.seed)
    torch.manual_seed(opts.seed)
    model = task.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=opts.min_lr, momentum=0.9)
    checkpoint_path = opts.run_dir / "checkpoint.pt"
    saved = _load_checkpoint(checkpoint_path)
    store = FileStore(opts.run_dir / "store")
    sched = AutoLRS(model, optimizer, _config(opts),
                    val_fn=lambda: task.evaluate(model)[0], store=store)
    curve, start_step = Curve(), 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["autolrs"])
        torch.set_rng_state(saved["torch_rng"])
        curve = Curve(**{k: [tuple(p) for p in v] for k, v in saved["curve"].items()})
        start_step = saved["step"]
        print(f"resuming {opts.run_dir} from step {start_step}")
    bar = _progress(opts, start_step)

    def after_step(step: int, loss: float) -> bool:
        sched.step(loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(phase=sched.phase, stage=sched.stage, lr=f"{sched.lr:.3g}",
                            loss=f"{loss:.3f}", refresh=False)
        if step % CHECKPOINT_EVERY == 0 and not sched.done:
            _save_checkpoint(checkpoint_path, step, model, optimizer, sched, curve)
        return sched.done

    started = time.perf_counter()
    train(task, model, optimizer, opts.max_steps, after_step=after_step, eval_every=100,
          seed=opts.seed, start_step=start_step, curve=curve)
    if bar is not None:
        bar.close()
    _save_checkpoint(checkpoint_path, sched.steps, model, optimizer, sched, curve)
    return sched, curve, time.perf_counter() - started


def run_constant(opts: DemoOptions, lr: float) -> tuple[Curve, float]:
    """The same model, data and step budget at one constant LR."""
    task = digits_task(seed=opts.seed)
    torch.manual_seed(opts.seed)
    model = task.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    started = time.perf_counter()
    curve = train(task, model, optimizer, opts.max_steps, eval_every=100, seed=opts.seed)
    return curve, time.perf_counter() - started


def _progress(opts: DemoOptions, start_step: int):
    if not opts.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=opts.max_steps, initial=start_step, desc="AutoLRS digits", unit="step",
                dynamic_ncols=True)


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Run AutoLRS and the constant-LR baseline, write the run folder, return the summary."""
    random.seed(opts.seed)
    np.random.seed(opts.seed)
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    summary_path = opts.run_dir / "summary.json"
    sched, curve, seconds = run_autolrs(opts)
    constant_lr = math.sqrt(opts.min_lr * opts.max_lr)
    print(f"constant-LR baseline at lr={constant_lr:.3g} (geometric middle of the interval)")
    base_curve, base_seconds = run_constant(opts, constant_lr)

    history = sched.history
    atomic_write_bytes(opts.run_dir / "history.jsonl", "".join(
        json.dumps(h, allow_nan=False) + "\n" for h in history).encode())
    summary = {
        "task": "digits", "preset": opts.preset, "seed": opts.seed, "max_steps": opts.max_steps,
        "config": sched.config.to_dict(),
        "autolrs": {
            "final_val_loss": curve.val_loss[-1][1], "final_val_accuracy": curve.val_accuracy[-1][1],
            "stage_lrs": [h["lr"] for h in history], "stages": len(history),
            "trial_steps": sum(h.get("search_steps") or 0 for h in history),
            "seconds": seconds,
        },
        "constant_lr": {
            "lr": constant_lr, "final_val_loss": base_curve.val_loss[-1][1],
            "final_val_accuracy": base_curve.val_accuracy[-1][1], "seconds": base_seconds,
        },
        "curve": curve.to_dict(),
        "baseline_curve": base_curve.to_dict(),
    }
    atomic_write_json(summary_path, summary)
    plot_schedule(opts.run_dir / "schedule.png", history, curve.to_dict(), base_curve.to_dict(),
                  title=f"AutoLRS on digits ({opts.preset} preset, {opts.max_steps} steps)")
    _print_report(summary, history, opts)
    return summary


def _print_report(summary: dict[str, Any], history: list[dict[str, Any]], opts: DemoOptions) -> None:
    sweep = history[0].get("range_test") if history else None
    if sweep and sweep.get("lr_min_loss") is not None:
        cap = sweep["max_lr"]
        print(f"\nLR range test: {sweep['steps']} steps, loss lowest at LR "
              f"{sweep['lr_min_loss']:.3g}; search below "
              f"{'max_lr' if cap is None else f'{cap:.3g}'}")
    print("\nstage  steps      tau  trials  chosen LR  forecast   reached")
    for h in history:
        forecast = "-" if h.get("predicted_loss") is None else f"{h['predicted_loss']:.4f}"
        reached = "-" if h.get("actual_loss") is None else f"{h['actual_loss']:.4f}"
        note = "  cooldown" if h.get("cooldown") else (
            f"  no search: {h['no_search']}" if h.get("no_search") else "")
        if h.get("backoffs"):
            note += "; " + backoff.describe(h["backoffs"])
        print(f"{h['stage']:>5}  {h['start_step']:>5}  {h['tau']:>7}  {len(h['trials']):>6}"
              f"  {h['lr']:>9.4g}  {forecast:>8}  {reached:>8}{note}")
    a, c = summary["autolrs"], summary["constant_lr"]
    print(f"\nfinal validation accuracy: AutoLRS {a['final_val_accuracy']:.4f} "
          f"(loss {a['final_val_loss']:.4f}) vs constant LR {c['lr']:.3g}: "
          f"{c['final_val_accuracy']:.4f} (loss {c['final_val_loss']:.4f}), "
          f"{opts.max_steps} steps each, {a['trial_steps']} of them AutoLRS trial steps")
    print(f"wrote {opts.run_dir}/history.jsonl, summary.json, schedule.png")
