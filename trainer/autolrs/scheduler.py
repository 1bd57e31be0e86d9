"""AutoLRS: the torch wrapper that feels like one more LR scheduler.

It feeds each step's loss to the pure StageController and applies the actions it returns:
set the LR (keeping each param group's ratio to the first), snapshot or restore model and
optimizer in memory, evaluate, finish. Optional parts report outside: a StateStore
(decisions, state, heartbeat) and a metrics object (Prometheus).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Protocol

import torch

from autolrs.config import AutoLRSConfig
from autolrs.decision_log import ReplayLog
from autolrs.engine.controller import Action, StageController
from autolrs.rng import get_rng_states, set_rng_states
from autolrs.runtime import Runtime
from autolrs.snapshot import TrainingSnapshot
from autolrs.stores.base import StateStore

log = logging.getLogger(__name__)

STATE_FORMAT = 1
HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TTL_SECONDS = 60.0


class Coordinator(Protocol):
    """How ranks agree (single process: identity). See ``autolrs.distributed``."""

    is_main: bool

    def mean_over_ranks(self, value: float) -> float: ...

    def broadcast_object(self, obj: Any, src: int = 0) -> Any: ...


class SingleProcess:
    """The coordinator of a run without a process group."""

    is_main = True

    def mean_over_ranks(self, value: float) -> float:
        return value

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return obj


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel or DataParallel wrapper (else ``model``)."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


class AutoLRS:
    """Tune the LR of ``optimizer`` during training with AutoLRS.

    Call ``step(loss)`` after every ``optimizer.step()``; stop when ``done``.

    With no config it reads ``AUTOLRS_CONFIG``. The runtime (state store, metrics port,
    checkpoint folder, ranks) comes from the environment unless given; where a valid
    checkpoint exists, model, optimizer and AutoLRS resume from it before the first step.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: AutoLRSConfig | None = None,
        val_fn: Callable[[], float] | None = None,
        *,
        store: StateStore | None = None,
        metrics: Any | None = None,
        coordinator: Coordinator | None = None,
        runtime: Runtime | None = None,
        batch_size: int | None = None,
    ):
        if config is None:
            config = AutoLRSConfig.from_env()
        if not isinstance(config, AutoLRSConfig):
            raise TypeError(f"config must be an AutoLRSConfig, got {type(config).__name__}")
        if not optimizer.param_groups:
            raise ValueError("optimizer has no param groups")
        self.runtime = runtime if runtime is not None else Runtime.from_env()
        self.model = model
        # Snapshots and checkpoints hold the wrapped module's state (no DDP "module."
        # prefix), so a run resumes under any world size, wrapped or not.
        self._state_module = unwrap_model(model)
        self.optimizer = optimizer
        self.val_fn = val_fn
        self.store = store if store is not None else self.runtime.store
        self.metrics = metrics if metrics is not None else self.runtime.metrics
        self.coordinator: Coordinator = (coordinator or self.runtime.coordinator
                                         or SingleProcess())
        self.checkpoints = self.runtime.checkpoints
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"AutoLRS batch_size must be an integer >= 1 (the per-rank batch), "
                             f"got {batch_size!r}")
        self.batch_size = batch_size
        self.config = self._scaled(config).resolved()
        first_lr = float(optimizer.param_groups[0]["lr"])
        if not (math.isfinite(first_lr) and first_lr > 0):
            # Groups follow the first one by their LR ratio to it: a frozen (lr 0) first
            # group would either start training or flatten every ratio.
            raise ValueError(
                f"the optimizer's first param group has lr {first_lr}; AutoLRS sets that "
                "group's LR and scales the others by their ratio to it: put a group with "
                "lr > 0 first (groups with lr 0 after it stay frozen)")
        self._lr_ratios = [float(g["lr"]) / first_lr for g in optimizer.param_groups]
        self._controller = StageController(self.config, has_val=val_fn is not None)
        self._snapshots: dict[str, TrainingSnapshot] = {}
        # A restarted writer continues from the stored version; an older one still
        # running then loses its next compare-and-set.
        self._store_version = self.store.load_state()[0] if self.store is not None else 0
        self._last_heartbeat = 0.0
        self.last_checkpoint_step: int | None = None
        self._started = False
        self._follower_view: dict[str, Any] = {}
        self._alone = self.coordinator.is_main and self._world_size() == 1
        self._checkpoint_due = False
        # What an earlier process of this run logged: a restart (from its checkpoint, or
        # from the start when it had none) must not log its replay twice (decision_log).
        self._replay = ReplayLog(self.store.decisions()
                                 if self.store is not None and self.coordinator.is_main else ())
        self.start()
        if self.checkpoints is not None:
            self.resume_from_checkpoint()

    def _world_size(self) -> int:
        return int(getattr(self.coordinator, "world_size", 1))

    def _scaled(self, config: AutoLRSConfig) -> AutoLRSConfig:
        """The LR interval for this run's global batch (``lr_scaling``; off by default)."""
        if config.lr_scaling == "none":
            return config
        if self.batch_size is None:
            raise ValueError("lr_scaling needs AutoLRS(..., batch_size=<per-rank batch size>)")
        return config.scaled_for_batch(self.batch_size * self._world_size())
    # ------------------------------------------------------------ public view
    # Rank 0 owns the controller; other ranks see the view rank 0 broadcasts with each
    # batch of actions.

    def _read(self, name: str) -> Any:
        """One field of the view: rank 0 reads its controller (without building the view:
        the properties are read several times a step), the others what it broadcast."""
        if self.coordinator.is_main:
            return getattr(self._controller, name)
        return self._follower_view[name]

    def _controller_view(self) -> dict[str, Any]:
        c = self._controller
        return {"lr": c.lr, "stage": c.stage, "tau": c.tau, "phase": c.phase,
                "steps": c.steps, "done": c.done}

    @property
    def lr(self) -> float:
        """The LR the next optimizer step uses (first param group)."""
        return self._read("lr")

    @property
    def stage(self) -> int:
        """The current stage, counted from 0."""
        return self._read("stage")

    @property
    def tau(self) -> int:
        """The current stage's length in steps."""
        return self._read("tau")

    @property
    def phase(self) -> str:
        """``"warmup"``, ``"search"``, ``"exploit"`` or ``"done"``."""
        return self._read("phase")

    @property
    def steps(self) -> int:
        """Every optimizer step taken so far, trial steps included."""
        return self._read("steps")

    @property
    def done(self) -> bool:
        """True once ``max_steps`` optimizer steps were taken."""
        return self._read("done")

    @property
    def history(self) -> list[dict[str, Any]]:
        """The stage decisions (JSON-able): trials, chosen LR, forecasts, errors."""
        return self._controller.history

    @property
    def best_predicted_loss(self) -> float | None:
        """The forecast loss of the LR in use (None before the first decision)."""
        return self._controller.best_predicted_loss

    @property
    def controller(self) -> StageController:
        """The pure controller (read it, do not drive it directly)."""
        return self._controller

    # ------------------------------------------------------------ training loop

    def start(self) -> None:
        """Apply the first LR and take the first stage snapshot (done by the constructor)."""
        if self._started:
            return
        self._started = True
        actions = self._controller.start() if self.coordinator.is_main else None
        self._run(actions)

    def step(self, loss: float | torch.Tensor) -> None:
        """Report the loss of the optimizer step just taken; may set a new LR or restore
        model and optimizer to a snapshot before the next step."""
        if self.done:
            return
        value = float(loss.detach().float().mean()) if torch.is_tensor(loss) else float(loss)
        value = self.coordinator.mean_over_ranks(value)
        phase = self.phase
        start = time.perf_counter()
        actions = self._controller.observe_loss(value) if self.coordinator.is_main else None
        if self._alone and not actions and not self._controller.events:
            # Most steps change nothing but the LR (a cooldown's): a run of one process has
            # no view to broadcast, no action to apply and no event to publish.
            self._set_group_lrs(self._controller.lr)
        else:
            self._run(actions, decision_started=start)
        if self.metrics is not None and self.coordinator.is_main:
            self.metrics.on_step(phase, value, self.lr)
        if self.checkpoints is not None:
            every = self.runtime.checkpoint_every
            if self._checkpoint_due or self.steps % every == 0 or self.done:
                self.save_checkpoint()
            if self.done:
                self.checkpoints.wait()
        self._maybe_heartbeat()

    def _run(self, actions: list[Action] | None, decision_started: float | None = None) -> None:
        """Apply actions (broadcast from rank 0), evaluating as often as asked."""
        while True:
            actions, view = self.coordinator.broadcast_object(
                (actions, self._controller_view() if self.coordinator.is_main else None))
            self._follower_view = view
            evaluate = self._apply(actions)
            self._publish(decision_started)
            if not evaluate:
                break
            value = self._evaluate()
            actions = (self._controller.observe_val_loss(value)
                       if self.coordinator.is_main else None)
        self._set_group_lrs(self.lr)

    def _evaluate(self) -> float:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                value = float(self.val_fn())
        finally:
            self.model.train(was_training)
        value = self.coordinator.mean_over_ranks(value)
        if self.metrics is not None and math.isfinite(value):
            self.metrics.on_val_loss(value)
        return value

    def _apply(self, actions: list[Action]) -> bool:
        evaluate = False
        for action in actions:
            if action.kind == "set_lr":
                self._set_group_lrs(action.lr)
            elif action.kind == "snapshot":
                snap = self._snapshots.setdefault(action.slot, TrainingSnapshot())
                snap.capture(self._state_module, self.optimizer)
                if self.metrics is not None:
                    self.metrics.on_snapshot(snap.seconds)
            elif action.kind == "restore":
                self._snapshots[action.slot].restore(self._state_module, self.optimizer)
                if self.metrics is not None:
                    self.metrics.on_restore()
            elif action.kind == "drop":
                self._snapshots.pop(action.slot, None)
            elif action.kind == "evaluate":
                if self.val_fn is None:
                    raise RuntimeError("AutoLRS asked for a validation loss but val_fn is None")
                evaluate = True
            elif action.kind == "done":
                pass
            else:
                raise ValueError(f"unknown AutoLRS action {action.kind!r}")
        return evaluate

    def _set_group_lrs(self, lr: float) -> None:
        for group, ratio in zip(self.optimizer.param_groups, self._lr_ratios):
            group["lr"] = lr * ratio

    # ------------------------------------------------------------ reporting

    def _publish(self, decision_started: float | None) -> None:
        """Send the controller's new events to the metrics and the store (rank 0 only)."""
        if not self.coordinator.is_main:
            return
        events = self._controller.drain_events()
        decided = False
        for event in events:
            kind = event["type"]
            if self.metrics is not None:
                if kind == "trial_start":
                    self.metrics.on_trial_start(event["lr"])
                elif kind == "trial_end":
                    self.metrics.on_trial_end(event["outcome"])
                elif kind == "decision":
                    seconds = (time.perf_counter() - decision_started
                               if decision_started is not None else 0.0)
                    self.metrics.on_decision(event["stage"], event["tau"], event["lr"],
                                             event["predicted_loss"], seconds)
                elif kind == "stage_end" and event.get("forecast_error") is not None:
                    self.metrics.on_forecast_error(event["forecast_error"])
            if kind in ("stage_end", "done"):
                self._checkpoint_due = True
            if kind in ("range_test", "trial_end", "decision", "rollback", "backoff", "stage_end",
                        "done"):
                decided = True
                if self.store is not None:
                    for entry in self._replay.entries_for(event):
                        self.store.append_decision(entry)
        if decided and self.store is not None:
            self.save_to_store()

    def save_to_store(self) -> None:
        """Write the controller state with compare-and-set (a stale writer raises)."""
        if self.store is None or not self.coordinator.is_main:
            return
        self._store_version = self.store.save_state(self._controller.state_dict(),
                                                    self._store_version)
        self._heartbeat()

    def _maybe_heartbeat(self) -> None:
        if self.store is None or not self.coordinator.is_main:
            return
        if time.monotonic() - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._heartbeat()

    def _heartbeat(self) -> None:
        self._last_heartbeat = time.monotonic()
        self.store.heartbeat(self.heartbeat_info(), HEARTBEAT_TTL_SECONDS)

    def heartbeat_info(self) -> dict[str, Any]:
        """What the operator reads: step, stage, tau, LR, phase, best predicted loss."""
        return {"step": self.steps, "stage": self.stage, "tau": self.tau, "lr": self.lr,
                "phase": self.phase, "best_predicted_loss": self.best_predicted_loss,
                "last_checkpoint_step": self.last_checkpoint_step, "time": time.time()}

    # ------------------------------------------------------------ checkpoints

    def checkpoint_payload(self) -> dict[str, Any]:
        """Model, optimizer, AutoLRS state (snapshots included), RNG states and step."""
        return {"step": self.steps, "model": self._state_module.state_dict(),
                "optimizer": self.optimizer.state_dict(), "autolrs": self.state_dict(),
                "rng": get_rng_states()}

    def save_checkpoint(self) -> None:
        """Write a durable checkpoint now (rank 0; the write runs in the background)."""
        self._checkpoint_due = False
        if self.checkpoints is None or not self.coordinator.is_main:
            return
        stalled = self.checkpoints.save(self.steps, self.checkpoint_payload())
        self.last_checkpoint_step = self.steps
        if self.metrics is not None:
            self.metrics.on_checkpoint(stalled)

    def resume_from_checkpoint(self) -> bool:
        """Load the newest valid checkpoint, if any (every rank reads the shared folder)."""
        found = self.checkpoints.load_latest(map_location="cpu")
        if found is None:
            return False
        step, payload = found
        try:
            self._controller_from(payload["autolrs"])  # another config: refuse before loading
            self._state_module.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.load_state_dict(payload["autolrs"])
            set_rng_states(payload["rng"])
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            # torch's size-mismatch errors span lines: one line, naming the checkpoint.
            why = f"no entry {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
            why = why if len(why) <= 400 else why[:397] + "..."
            raise ValueError(f"cannot resume from the checkpoint of step {step} in "
                             f"{self.checkpoints.directory}: {why}") from exc
        self.last_checkpoint_step = step
        log.info("AutoLRS resumed from the checkpoint of step %d", step)
        return True

    def close(self) -> None:
        """Finish background checkpoint writes and close what the runtime opened (also when
        the last checkpoint write failed: queued store writes must still be flushed)."""
        try:
            if self.checkpoints is not None:
                self.checkpoints.wait()
        finally:
            self.runtime.close()

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: controller state and in-memory snapshots."""
        return {
            "format": STATE_FORMAT,
            "controller": self._controller.state_dict(),
            "snapshots": {slot: snap.state_dict() for slot, snap in self._snapshots.items()},
            "lr_ratios": list(self._lr_ratios),
            "started": self._started,
        }

    def _controller_from(self, state: dict[str, Any]) -> StageController:
        """The saved controller, moved to this run's global batch (``lr_scaling``); a state
        saved under another config is refused: its stage plan, budget and cooldown follow
        that config, so resuming would silently keep it."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"unsupported AutoLRS state format {found!r} (expected {STATE_FORMAT})")
        missing = [key for key in ("controller", "snapshots", "lr_ratios", "started") if key not in state]
        if missing:
            raise ValueError(f"the AutoLRS state lacks {', '.join(missing)} (not a state_dict() of AutoLRS)")
        controller = StageController.from_state(state["controller"])
        if self.config.lr_scaling != "none":
            # Saved under another world size: move the search to this run's global batch.
            factor = self.config.min_lr / controller.cfg.min_lr
            if not math.isclose(factor, 1.0, rel_tol=1e-12):
                controller.rescale_lr(factor)
        differ = controller.cfg.differences(self.config)
        if differ:
            raise ValueError(
                "the AutoLRS state was saved with another config: "
                f"{'; '.join(differ)}; resume with the same config, or start afresh "
                "(an empty AUTOLRS_CHECKPOINT_DIR)")
        return controller

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``; load model and optimizer state first."""
        self._controller = self._controller_from(state)
        self.config = self._controller.cfg
        self._snapshots = {}
        for slot, snap_state in state["snapshots"].items():
            snap = TrainingSnapshot()
            snap.load_state_dict(snap_state)
            self._snapshots[slot] = snap
        self._lr_ratios = list(state["lr_ratios"])
        self._started = bool(state["started"])
        self._follower_view = self._controller_view()
        # Decisions made after this state and before the crash are in the log already: an
        # exact replay must not append them twice, and one that differs (another world
        # size) voids them.
        self._replay = self._replay.resumed_at(self._controller.steps)
        if self._started:
            self._set_group_lrs(self._controller.lr)
