"""Train a small CNN on scikit-learn's digits with AutoLRS.

The same script runs on a laptop (`python examples/digits_cnn.py`), under torchrun
(`autolrs run --nproc-per-node=2 -- examples/digits_cnn.py`) and, unchanged, in an
AutoLRSJob's pods: the operator sets AUTOLRS_CONFIG, the store, checkpoint folder and
metrics port, and a restarted worker resumes from the newest checkpoint.
"""

import argparse
import os

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from autolrs import AutoLRS, AutoLRSConfig
from autolrs.distributed import DistContext, init_process_group_if_needed
from autolrs.tasks.digits import digits_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    init_process_group_if_needed()               # a no-op without torchrun
    dist = DistContext.from_env()
    torch.set_num_threads(1)
    task = digits_task(seed=args.seed)
    model = task.make_model()                    # same seed on every rank
    net = DistributedDataParallel(model) if dist.world_size > 1 else model
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    # In a pod AUTOLRS_CONFIG decides; locally these defaults do.
    config = None if "AUTOLRS_CONFIG" in os.environ else AutoLRSConfig(
        min_lr=1e-3, max_lr=1.0, tau=200, tau_max=1600, max_steps=args.max_steps, seed=args.seed)
    sched = AutoLRS(net, optimizer, config, val_fn=lambda: task.evaluate(model)[0],
                    batch_size=task.batch_size)  # per rank: lrScaling follows the world size
    if sched.steps and dist.is_main:             # a restarted worker: say where it resumed
        print(f"resumed from the checkpoint of step {sched.steps}", flush=True)

    # sched.steps > 0 after a resume: continue the data where the checkpoint left it.
    batches = task.batches(seed=args.seed, rank=dist.rank, world_size=dist.world_size,
                           start_step=sched.steps)
    while not sched.done:
        x, y = next(batches)
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sched.step(loss)

    val_loss, accuracy = task.evaluate(model)
    if dist.is_main:
        lrs = ", ".join(f"{h['lr']:.3g}" for h in sched.history)
        print(f"done: {sched.steps} steps, stage LRs [{lrs}], "
              f"validation loss {val_loss:.4f}, accuracy {accuracy:.4f}", flush=True)
    sched.close()


if __name__ == "__main__":
    main()
