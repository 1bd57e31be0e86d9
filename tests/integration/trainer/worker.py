"""A tiny AutoLRS training script the trainer integration tests run as a real process.

It is an ordinary user script (config from ``AUTOLRS_CONFIG``, store, checkpoints and
metrics from the ``AUTOLRS_*`` environment, DDP under torchrun, data positioned at
``sched.steps`` after a resume) plus test-only knobs read from ``WORKER_*`` variables:

- ``WORKER_OUT`` (required): folder for the logs; ``WORKER_TAG`` prefixes the file names.
  Every rank appends one JSON line per step to ``{tag}-rank{r}.jsonl``: the step, the LR
  the next step uses, phase, stage, restores so far, the sha256 of the parameters before
  and after ``sched.step`` and
  (rank 0) the mean loss and validation losses the controller was fed. Rank 0 writes
  ``{tag}-final.json`` (history, controller state) at the end.
- ``WORKER_VAL=1``: give AutoLRS a ``val_fn``.
- ``WORKER_STEP_SLEEP``: seconds to sleep after each step (to keep a run alive).
- ``WORKER_HOLD_FILE``: after training, rank 0 writes ``{tag}-finished.json``; every rank
  waits for this file.
- ``WORKER_KILL_AT`` / ``WORKER_KILL_PHASE`` / ``WORKER_KILL_MODE`` / ``WORKER_KILL_RANK``:
  SIGKILL this process at the first step >= KILL_AT (in that phase, if given) on that rank
  (default 0). Modes: ``step`` (right after the step), ``after_checkpoint`` (at a
  checkpoint step, once rank 0's checkpoint file is committed), ``mid_write`` (at a
  checkpoint step of rank 0, while its temp file is being written). ``{tag}-killed.json`` says where it happened.
- ``WORKER_BALLAST_MB``: a constant buffer of that size in the model, so checkpoint
  writes take long enough to be caught in the middle.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from autolrs import AutoLRS
from autolrs.checkpoint import checkpoint_name
from autolrs.runtime import Runtime
from autolrs.tasks.base import TensorTask

ENV = os.environ
OUT = Path(ENV["WORKER_OUT"])
TAG = ENV.get("WORKER_TAG", "run")


def synthetic_task(seed: int = 0) -> TensorTask:
    """Four-class points in 8-d labelled by a fixed random linear map (no files, no download)."""
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(4096, 8, generator=generator)
    y = (x @ torch.randn(8, 4, generator=generator)).argmax(dim=1)

    def make_model() -> nn.Module:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4))
        ballast_mb = int(ENV.get("WORKER_BALLAST_MB", "0"))
        if ballast_mb:
            model.register_buffer("ballast", torch.ones(ballast_mb * 2**18))
        return model

    return TensorTask("synthetic", x[:3584], y[:3584], x[3584:], y[3584:], make_model, 32)


class Recorder:
    """Metrics hooks that note what the controller was fed, then pass them on."""

    def __init__(self, inner):
        self.inner = inner
        self.loss: float | None = None
        self.vals: list[float] = []
        self.restores = 0

    def on_step(self, phase, loss, lr):
        self.loss = loss
        if self.inner is not None:
            self.inner.on_step(phase, loss, lr)

    def on_val_loss(self, loss):
        self.vals.append(loss)
        if self.inner is not None:
            self.inner.on_val_loss(loss)

    def on_restore(self):
        self.restores += 1
        if self.inner is not None:
            self.inner.on_restore()

    def __getattr__(self, name):
        inner = self.__dict__.get("inner")
        return getattr(inner, name) if inner is not None else (lambda *args, **kwargs: None)


def parameter_sha(model: nn.Module) -> str:
    """sha256 of every parameter and buffer (except the ballast), in state_dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if not name.endswith("ballast"):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_json(name: str, doc: dict) -> None:
    path = OUT / f"{TAG}-{name}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def maybe_kill(sched: AutoLRS, rank: int) -> None:
    """SIGKILL this process where the WORKER_KILL_* variables say."""
    at = int(ENV.get("WORKER_KILL_AT", "0"))
    if not at or rank != int(ENV.get("WORKER_KILL_RANK", "0")) or sched.steps < at:
        return
    if ENV.get("WORKER_KILL_PHASE") and sched.phase != ENV["WORKER_KILL_PHASE"]:
        return
    mode = ENV.get("WORKER_KILL_MODE", "step")
    if mode != "step":  # only rank 0 writes checkpoints; other ranks know the cadence
        due = (sched.last_checkpoint_step if rank == 0 else
               sched.steps - sched.steps % sched.runtime.checkpoint_every)
        if due != sched.steps:
            return
    caught_mid_write = None
    directory = sched.checkpoints.directory if mode != "step" else None
    final = directory / checkpoint_name(sched.steps) if directory else None
    deadline = time.monotonic() + 60
    if mode == "after_checkpoint":  # the rename commits a checkpoint
        while not final.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
    elif mode == "mid_write":
        while not final.exists() and time.monotonic() < deadline:
            if list(directory.glob(f".{final.name}.*.tmp")):
                caught_mid_write = True
                break
            time.sleep(0.0005)
        else:
            caught_mid_write = False
    write_json("killed.json", {"step": sched.steps, "phase": sched.phase, "stage": sched.stage,
                               "mode": mode, "caught_mid_write": caught_mid_write})
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    runtime = Runtime.from_env()                 # joins torchrun's group when launched by it
    rank = getattr(runtime.coordinator, "rank", 0)
    world_size = getattr(runtime.coordinator, "world_size", 1)
    torch.set_num_threads(1)
    task = synthetic_task()
    model = task.make_model()
    net = DistributedDataParallel(model) if world_size > 1 else model
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    recorder = Recorder(runtime.metrics)
    val_fn = (lambda: task.evaluate(model)[0]) if ENV.get("WORKER_VAL") == "1" else None
    sched = AutoLRS(net, optimizer, val_fn=val_fn, runtime=runtime, metrics=recorder)
    resumed_from = sched.steps

    log = open(OUT / f"{TAG}-rank{rank}.jsonl", "a", buffering=1)
    log.write(json.dumps({"event": "start", "steps": resumed_from, "world_size": world_size,
                          "sha": parameter_sha(model), "lr": optimizer.param_groups[0]["lr"]})
              + "\n")
    sleep = float(ENV.get("WORKER_STEP_SLEEP", "0"))
    batches = task.batches(seed=0, rank=rank, world_size=world_size, start_step=sched.steps)
    while not sched.done:
        x, y = next(batches)
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sha_before = parameter_sha(model)
        recorder.vals = []
        sched.step(loss)
        log.write(json.dumps({
            "step": sched.steps, "lr": optimizer.param_groups[0]["lr"], "phase": sched.phase,
            "stage": sched.stage, "restores": recorder.restores, "sha_before": sha_before,
            "sha": parameter_sha(model),
            "loss": recorder.loss, "vals": recorder.vals}) + "\n")
        maybe_kill(sched, rank)
        if sleep:
            time.sleep(sleep)

    if rank == 0:
        write_json("final.json", {
            "resumed_from": resumed_from, "steps": sched.steps, "lr": sched.lr,
            "stage": sched.stage, "history": sched.history, "sha": parameter_sha(model),
            "controller": sched.controller.state_dict(), "world_size": world_size})
    hold = ENV.get("WORKER_HOLD_FILE")
    if hold:  # every rank waits, serving its metrics, until the test releases it
        if rank == 0:
            write_json("finished.json", {"lr": sched.lr, "stage": sched.stage,
                                         "steps": sched.steps})
        while not Path(hold).exists():
            time.sleep(0.1)
    sched.close()
    log.write(json.dumps({"event": "closed", "in_process_group": dist.is_initialized()}) + "\n")


if __name__ == "__main__":
    main()
