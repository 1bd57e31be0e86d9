"""Cost of the torch glue: in-memory snapshot/restore against a raw copy of the same bytes,
and the per-step overhead of ``sched.step()`` during exploit against a bare loop."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from autolrs.config import AutoLRSConfig
from autolrs.scheduler import AutoLRS
from autolrs.snapshot import TrainingSnapshot

from bench.timing import summary_ms, time_calls


def _sync(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


def mlp(width: int, layers: int = 4) -> nn.Module:
    """``layers`` square linear layers: width 1600 and 4 layers give 10.2M parameters."""
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*blocks[:-1])


def adam_model(width: int, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """An MLP with Adam state (one step taken, so exp_avg/exp_avg_sq exist)."""
    torch.manual_seed(0)
    model = mlp(width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(32, width, device=device)
    model(x).pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def snapshot_cost(width: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """capture + restore of model and Adam state vs copying the same bytes (flat and per tensor)."""
    model, optimizer = adam_model(width, device)
    sync = _sync(device)
    snapshot = TrainingSnapshot()
    start = time.perf_counter()
    snapshot.capture(model, optimizer)
    if sync:
        sync()
    first_capture = time.perf_counter() - start
    capture = time_calls(lambda: snapshot.capture(model, optimizer), repeats, sync=sync)
    restore = time_calls(lambda: snapshot.restore(model, optimizer), repeats, sync=sync)
    nbytes = snapshot.nbytes()
    source = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    flat_copy = time_calls(lambda: target.copy_(source), repeats, sync=sync)
    flat_clone = time_calls(lambda: source.clone(), repeats, sync=sync)
    tensors = [t for t in snapshot.model.values()] + [
        v for entry in snapshot.optim_state for v in entry.values() if torch.is_tensor(v)]
    buffers = [torch.empty_like(t) for t in tensors]

    def per_tensor() -> None:
        for buffer, tensor in zip(buffers, tensors):
            buffer.copy_(tensor)

    tensor_copy = time_calls(per_tensor, repeats, sync=sync)
    c, r = summary_ms(capture), summary_ms(restore)
    flat, each = summary_ms(flat_copy), summary_ms(tensor_copy)
    round_trip = c["median_ms"] + r["median_ms"]
    return {
        "device": str(device), "parameters": sum(p.numel() for p in model.parameters()),
        "bytes": nbytes, "first_capture_ms": first_capture * 1e3,
        "capture": c, "restore": r, "raw_flat_copy": flat, "raw_flat_clone": summary_ms(flat_clone),
        "raw_per_tensor_copy": each,
        "ratio_to_flat_copy": round_trip / (2 * flat["median_ms"]),
        "ratio_to_per_tensor_copy": round_trip / (2 * each["median_ms"]),
        "note": "capture+restore moves the bytes twice; the raw figures copy them once, "
                "so ratios divide by two raw copies",
    }


def digits_like_batch(device: torch.device, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 8x8 images and labels shaped like the digits task's batches."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 8, 8, generator=generator).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    return x, y


def exploit_overhead(steps: int, blocks: int, device: torch.device) -> dict[str, Any]:
    """Alternate blocks of a bare training loop and the same loop with ``sched.step()``
    (AutoLRS in its exploit phase) on the digits CNN; time ``sched.step`` itself too."""
    from autolrs.tasks.digits import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = digits_like_batch(device)
    total = 2 * steps * blocks
    config = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, tau=max(10_000, 4 * total),
                           tau_max=max(10_000, 4 * total), trials_per_stage=2, min_trials=1,
                           trial_fraction=0.002, preset="paper")
    sched = AutoLRS(model, optimizer, config)

    def train_step() -> float:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    while sched.phase != "exploit":
        sched.step(train_step())
    for _ in range(50):  # warm caches in both variants
        sched.step(train_step())
    bare_blocks, sched_blocks, in_step = [], [], []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(steps):
            train_step()
        bare_blocks.append((time.perf_counter() - start) / steps)
        start = time.perf_counter()
        for _ in range(steps):
            value = train_step()
            begin = time.perf_counter()
            sched.step(value)
            in_step.append(time.perf_counter() - begin)
        sched_blocks.append((time.perf_counter() - start) / steps)
    if sched.phase != "exploit":
        raise RuntimeError("the scheduler left exploit during the measurement; raise tau")
    bare, with_sched = summary_ms(bare_blocks), summary_ms(sched_blocks)
    step_cost = summary_ms(in_step)
    return {
        "device": str(device), "model": "DigitsCNN (10k params), batch 64",
        "bare_step": bare, "step_with_sched": with_sched, "sched_step_call": step_cost,
        "overhead_fraction": step_cost["median_ms"] / bare["median_ms"],
        "loop_ratio": with_sched["median_ms"] / bare["median_ms"],
        "note": "overhead_fraction: median time inside sched.step() / median bare step; "
                "loop_ratio: A/B blocks of whole steps (noisier on a shared machine)",
    }
