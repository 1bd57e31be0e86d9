"""The AutoLRS stage controller: observations in, actions out, state as one JSON-able dict.

Training is cut into stages. A stage snapshots the model, tries LRs proposed by the BO for
``tau'`` steps each (restoring the snapshot between trials), forecasts each trial's loss at
``tau`` steps, then exploits the best LR. No torch, no I/O: the wrapper applies the actions.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from autolrs.config import AutoLRSConfig
from autolrs.engine import backoff, range_test
from autolrs.engine.bo import SAME_LR_LOG10, LRSearch, Observation, SearchSpace
from autolrs.engine.forecast import MIN_POINTS, Forecast, forecast_loss

STATE_VERSION = 1
RECENT_LOSSES = 10        # window for the stage's reference loss and the exploit's end loss
VAL_POINTS = 16           # validation evaluations per trial in validation mode (reference)
ADAPTIVE_KAPPA = 1.0      # LCB weight of the "can the search still improve?" test
ADAPTIVE_MARGIN = 0.01    # relative improvement the search must still promise to go on
MIN_FINAL_TRIAL_STEPS = MIN_POINTS * 2
CONVERGED_LOG10 = 0.1     # decades: a lower-bound optimum this close to a tried LR is known
STALL_MIN_DROP = 0.2      # stall check only when the trial promised at least this relative drop
STALL_FRACTION = 0.1      # ... and half the exploit delivered less than this part of it
LOSS_FLOOR_FRACTION = 0.05  # of the first loss: the least level a relative change is of
EARLY_STOP_AT = 1 / 2     # fraction of a trial after which a hopeless one is stopped
EARLY_STOP_MIN_STEPS = 2 * MIN_POINTS  # no early stop when the check point comes sooner
BRACKET_LOG10 = 0.5       # decades: a worse trial this close on each side brackets the best
BRACKET_STEP_LOG10 = 0.4  # decades: where a bracketing trial is placed from the best LR
COOLDOWN_DROP = 0.1       # cooldown_shape "drop": the LR falls to this part at once

PHASES = ("warmup", "search", "exploit", "done")


@dataclass(frozen=True)
class Action:
    """One thing the wrapper must do before the next optimizer step.

    kind: ``set_lr`` (lr), ``snapshot``/``restore``/``drop`` (slot: ``stage`` or ``best``),
    ``evaluate`` (call val_fn, then ``observe_val_loss``), ``done``.
    """

    kind: str
    lr: float | None = None
    slot: str | None = None


def set_lr(lr: float) -> Action:
    return Action("set_lr", lr=lr)


class StageController:
    """The AutoLRS algorithm as a state machine (see module docstring)."""

    def __init__(self, config: AutoLRSConfig, has_val: bool = False):
        cfg = config if config._resolved else config.resolved()
        self._use_config(cfg)
        self.s: dict[str, Any] = {
            "version": STATE_VERSION,
            "config": cfg.to_dict(),
            "has_val": bool(has_val),
            "started": False,
            "steps": 0,
            "phase": "warmup",
            "stage": 0,
            "tau": cfg.tau,
            "trial_steps": cfg.trial_steps,
            # Validation mode: the reference enters it once tau reaches tau_max;
            # ``early_validation`` scores trials on validation loss from the first stage.
            "val_mode": bool(has_val) and bool(cfg.early_validation),
            "lr": cfg.min_lr,
            "warmup_done": 0,
            "awaiting_val": None,
            "recent": [],
            "stage_record": None,
            "trial": None,
            "observations": [],
            "prior": [],
            "best_saved": None,
            "exploit": None,
            "history": [],
            "forecast_errors": {"train": [], "val": []},
            "last_val_loss": None,
            "first_loss": None,
            # LR range test: the sweep in progress, then its result (both None before).
            "range": None,
            "range_result": None,
        }
        self.events: list[dict[str, Any]] = []
        self._search_cache: LRSearch | None = None

    def _use_config(self, cfg: AutoLRSConfig) -> None:
        """Run under ``cfg`` (resolved); its cooldown length is kept apart because every
        step reads it and the config's property recomputes it."""
        self.cfg = cfg
        self._cooldown_steps = cfg.cooldown_steps

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (a deep copy, JSON-able)."""
        return copy.deepcopy(self.s)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "StageController":
        """Rebuild a controller that makes exactly the decisions the saved one would have."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"unsupported AutoLRS controller state (version {state.get('version')!r}, "
                f"expected {STATE_VERSION})" if isinstance(state, dict)
                else "AutoLRS controller state must be a dict"
            )
        cfg = AutoLRSConfig.from_dict(state["config"]).resolved()
        ctrl = cls(cfg, has_val=state["has_val"])
        ctrl.s = copy.deepcopy(state)
        return ctrl

    def rescale_lr(self, factor: float) -> None:
        """Multiply every LR the controller holds (interval, current LR, this stage's trials,
        warm-start prior, exploit LR) by ``factor``: the global batch changed under
        ``lr_scaling``. Past stages in the history keep the LRs they used."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"LR rescale factor must be a finite number > 0, got {factor}")
        s = self.s
        for key in ("min_lr", "max_lr", "warmup_lr"):
            if s["config"][key] is not None:
                s["config"][key] *= factor
        s["lr"] *= factor
        for holder in [s["trial"], s["exploit"], *s["observations"], *s["prior"]]:
            if holder is not None:
                holder["lr"] *= factor
        if (s["exploit"] or {}).get("cooldown_lr") is not None:
            s["exploit"]["cooldown_lr"] *= factor
        sweep = s.get("range")
        if sweep is not None:
            sweep["lrs"] = [lr * factor for lr in sweep["lrs"]]
            if sweep["best_lr"] is not None:
                sweep["best_lr"] *= factor
        result = s.get("range_result") or {}
        for key in ("lr_min_loss", "max_lr", "first_stage_min_lr"):
            if result.get(key) is not None:
                result[key] *= factor
        if (s["stage_record"] or {}).get("lr_floor") is not None:
            s["stage_record"]["lr_floor"] *= factor
        self._use_config(AutoLRSConfig.from_dict(s["config"]).resolved())
        self._search_cache = None

    def drain_events(self) -> list[dict[str, Any]]:
        """Events since the last call (trial ends, decisions, rollbacks, stage ends).

        Each carries an ``id`` (``type@step``: one event of a type per step), the same in
        a run replayed from a checkpoint, so a log can drop what it already holds."""
        out, self.events = self.events, []
        for event in out:
            event["id"] = f"{event['type']}@{event['step']}"
        return out

    # ------------------------------------------------------------ read-only view

    @property
    def lr(self) -> float:
        """The LR of the next optimizer step."""
        return self.s["lr"]

    @property
    def phase(self) -> str:
        return self.s["phase"]

    @property
    def stage(self) -> int:
        return self.s["stage"]

    @property
    def tau(self) -> int:
        return self.s["tau"]

    @property
    def steps(self) -> int:
        return self.s["steps"]

    @property
    def done(self) -> bool:
        return self.s["phase"] == "done"

    @property
    def awaiting_val(self) -> bool:
        return self.s["awaiting_val"] is not None

    @property
    def history(self) -> list[dict[str, Any]]:
        """Finished stages, oldest first (JSON-able copies)."""
        return copy.deepcopy(self.s["history"])

    @property
    def best_predicted_loss(self) -> float | None:
        exploit = self.s["exploit"]
        if exploit is not None:
            return exploit["predicted"]
        if self.s["history"]:
            return self.s["history"][-1]["predicted_loss"]
        return None

    # ------------------------------------------------------------ observations

    def start(self) -> list[Action]:
        """Actions before the very first step (idempotent after a restore)."""
        if self.s["started"]:
            return [set_lr(self.lr)] if not self.done else []
        self.s["started"] = True
        if self.cfg.warmup_steps > 0:
            self.s["phase"] = "warmup"
            self.s["lr"] = self._warmup_lr(0)
            return [set_lr(self.lr)]
        return self._begin_stage()

    def observe_loss(self, loss: float) -> list[Action]:
        """Feed the training loss of the optimizer step just taken."""
        if not self.s["started"]:
            raise RuntimeError("call start() before the first observe_loss()")
        if self.done:
            return []
        if self.s["awaiting_val"] is not None:
            raise RuntimeError("a validation loss is pending: call observe_val_loss() first")
        loss = float(loss)
        self.s["steps"] += 1
        if math.isfinite(loss):
            if self.s["first_loss"] is None:
                self.s["first_loss"] = loss
            recent = self.s["recent"]
            recent.append(loss)
            del recent[:-RECENT_LOSSES]
        if (self.cfg.max_steps is not None and self.s["steps"] >= self.cfg.max_steps
                and not (self._exploit_ends_now() and self.s["stage_record"]["final"])):
            return self._finish("max_steps reached")
        if self._cooldown_due():
            actions = self._close_stage()
            self.s["stage"] += 1
            return actions + self._begin_final_exploit(
                self.cfg.max_steps - self.s["steps"], cooldown=True)
        if self.s.get("range") is not None:
            return self._on_range_step(loss)
        phase = self.s["phase"]
        if phase == "warmup":
            return self._on_warmup_step()
        if phase == "search":
            return self._on_trial_step(loss)
        return self._on_exploit_step(loss)

    def observe_val_loss(self, loss: float) -> list[Action]:
        """Feed the validation loss asked for by an ``evaluate`` action."""
        waiting = self.s["awaiting_val"]
        if waiting is None:
            raise RuntimeError("no validation loss was asked for")
        self.s["awaiting_val"] = None
        loss = float(loss)
        if waiting == "trial":
            trial = self.s["trial"]
            if not math.isfinite(loss):
                return self._end_trial("diverged")
            trial["val_losses"].append(loss)
            if trial["steps"] >= self.s["trial_steps"]:
                return self._end_trial("completed")
            if self._hopeless(trial):
                return self._end_trial("early_stopped")
            return []
        self.s["exploit"]["val_loss"] = loss if math.isfinite(loss) else None
        return self._end_stage()

    # ------------------------------------------------------------ warmup

    def _warmup_lr(self, done: int) -> float:
        return self.cfg.warmup_lr * (done + 1) / self.cfg.warmup_steps

    def _on_warmup_step(self) -> list[Action]:
        self.s["warmup_done"] += 1
        if self.s["warmup_done"] >= self.cfg.warmup_steps:
            return self._begin_stage()
        self.s["lr"] = self._warmup_lr(self.s["warmup_done"])
        return [set_lr(self.lr)]

    # ------------------------------------------------------------ stages

    def _remaining(self) -> int | None:
        if self.cfg.max_steps is None:
            return None
        return self.cfg.max_steps - self.s["steps"]

    def _search_remaining(self) -> int | None:
        """Steps left before the cooldown (before max_steps without one); None: no budget."""
        remaining = self._remaining()
        return None if remaining is None else remaining - self._cooldown_steps

    def _exploit_ends_now(self) -> bool:
        """This step is the planned last one of a stage's exploit (not a cooldown's): the
        stage ends normally, with its forecast checked (a final stage even on the
        budget's last step)."""
        exploit = self.s["exploit"]
        return (self.s["phase"] == "exploit" and exploit.get("cooldown_lr") is None
                and exploit["done"] + 1 >= exploit["remaining"])

    def _cooldown_due(self) -> bool:
        """The cooldown's first step is next, but a stage (or warmup) is still running: the
        stages were not fitted to the budget (``fit_final_stage`` off). A final stage's
        planned end is left to finish normally (it ends exactly here)."""
        s = self.s
        cooldown = self._cooldown_steps
        if not cooldown or self.cfg.max_steps - s["steps"] > cooldown:  # search budget left
            return False
        if s["phase"] == "exploit" and (s["exploit"].get("cooldown_lr") is not None
                                        or self._exploit_ends_now()):
            return False
        return s["phase"] in ("warmup", "search", "exploit")

    def _stage_cost(self, tau: int, trial_steps: int) -> int:
        kept = trial_steps if self.cfg.keep_best_trial else 0
        return self.cfg.trials_per_stage * trial_steps + tau - kept

    def _begin_stage(self) -> list[Action]:
        s = self.s
        if self._range_test_due():
            return self._begin_range_test()
        s["phase"] = "search"
        s["observations"] = []
        s["best_saved"] = None
        s["exploit"] = None
        remaining = self._search_remaining()
        if remaining is not None and remaining <= 0 and self._cooldown_steps:
            return self._begin_final_exploit(self._remaining(), cooldown=True)
        if self._holds_final_stage(remaining):
            return self._begin_final_exploit(remaining, no_search="the cooldown follows")
        final = False
        if self.cfg.fit_final_stage and remaining is not None:
            cost = self._stage_cost(s["tau"], s["trial_steps"])
            # A stage that exactly fills what is left is the final one too: else its exploit
            # ends on the budget's last step unplanned and is recorded incomplete.
            final = remaining <= cost
            if remaining < cost:
                scale = remaining / cost
                tau = max(1, int(s["tau"] * scale))
                # Shrunk with the stage, not floored by min_trial_steps (trial_steps_for):
                # a fitted last stage's trials must fit what is left of the budget.
                trial = max(1, round(tau * self.cfg.trial_fraction))
                if trial < MIN_FINAL_TRIAL_STEPS and s["history"]:
                    return self._begin_final_exploit(remaining, no_search="too few steps left")
                s["tau"], s["trial_steps"] = max(tau, trial), trial
        s["stage_record"] = {
            "stage": s["stage"],
            "tau": s["tau"],
            "trial_steps": s["trial_steps"],
            "val_mode": s["val_mode"],
            "final": final,
            "start_step": s["steps"],
            "reference_loss": _mean(s["recent"]),
            "reference_val_loss": s["last_val_loss"],
            "rollbacks": [],
            "lr_floor": (s["history"][-1]["lr"] / self.cfg.max_lr_decay
                         if self.cfg.max_lr_decay and s["history"] else None),
        }
        if not s["history"] and s.get("range_result") is not None:
            s["stage_record"]["range_test"] = dict(s["range_result"])
        first = self._first_trial_lr()
        self._start_trial(first)
        return [Action("snapshot", slot="stage"), set_lr(first)]

    def _holds_final_stage(self, remaining: int | None) -> bool:
        """With ``hold_final_stage`` and a cooldown: the stage that would run into the
        cooldown (its k trials and tau steps do not fit what is left) keeps the last
        stage's LR to the cooldown's start, with no search. Its constant-LR trials cannot
        see what the cooldown buys, and their short horizon favours smaller LRs: on the
        char LM, from step 950, holding 0.01 to the cooldown ended lower than 0.0015-0.003,
        which the trials (even annealed ones) ranked first."""
        s = self.s
        if not (self.cfg.hold_final_stage and self._cooldown_steps and s["history"]):
            return False
        return remaining is not None and remaining < self._stage_cost(s["tau"], s["trial_steps"])

    # ------------------------------------------------------------ LR range test

    def _range_steps(self) -> int:
        return range_test.sweep_steps(self.cfg.min_lr, self.cfg.max_lr)

    def _range_test_due(self) -> bool:
        """Once, before the first stage's search; recorded as skipped when the budget is
        too small for the sweep to pay off."""
        s = self.s
        if not self.cfg.range_test or s["history"] or s.get("range_result") is not None:
            return False
        remaining = self._search_remaining()
        need = range_test.BUDGET_FACTOR * self._range_steps()
        if remaining is not None and remaining < need:
            s["range_result"] = {"skipped": "search budget under "
                                 f"{range_test.BUDGET_FACTOR} x {self._range_steps()} steps"}
            return False
        return True

    def _begin_range_test(self) -> list[Action]:
        s = self.s
        s["phase"] = "search"
        s["range"] = range_test.new_sweep(s["steps"])
        s["lr"] = range_test.sweep_lr(self.cfg.min_lr, self.cfg.max_lr, 0)
        return [Action("snapshot", slot="stage"), set_lr(s["lr"])]

    def _on_range_step(self, loss: float) -> list[Action]:
        s = self.s
        sweep = s["range"]
        diverged = range_test.observe(sweep, s["lr"], loss)
        done = len(sweep["losses"])
        if not diverged and done < self._range_steps():
            s["lr"] = range_test.sweep_lr(self.cfg.min_lr, self.cfg.max_lr, done)
            return [set_lr(s["lr"])]
        s["range"] = None
        s["range_result"] = range_test.result(sweep, diverged, self.cfg.min_lr, self.cfg.max_lr)
        s["recent"] = []  # the sweep's losses are not the restored model's
        self.events.append({"type": "range_test", "stage": s["stage"], "step": s["steps"],
                            **s["range_result"]})
        return [Action("restore", slot="stage")] + self._begin_stage()

    def _max_lr(self) -> float:
        """The search's upper end: ``max_lr``, lowered by the range test's cap."""
        cap = (self.s.get("range_result") or {}).get("max_lr")
        return self.cfg.max_lr if cap is None else min(cap, self.cfg.max_lr)

    def _begin_final_exploit(self, remaining: int, cooldown: bool = False,
                             no_search: str | None = None) -> list[Action]:
        """No search left to make: keep the last stage's LR to the end of the search
        budget (``no_search`` says why, in the stage record). With ``cooldown``: the
        budget's last ``remaining`` steps, in which the LR decays from the one in use to 0
        as ``cooldown_shape`` says (a constant-LR trial cannot see what annealing buys, so
        the search never chooses it)."""
        s = self.s
        lr = s["lr"] if cooldown or not s["history"] else s["history"][-1]["lr"]
        s["stage_record"] = {
            "stage": s["stage"], "tau": remaining, "trial_steps": 0,
            "val_mode": s["val_mode"], "final": True, "cooldown": cooldown,
            "start_step": s["steps"], "reference_loss": _mean(s["recent"]), "rollbacks": [],
        }
        if no_search is not None:
            s["stage_record"]["no_search"] = no_search
        s["phase"] = "exploit"
        s["exploit"] = {"lr": lr, "rank": 0, "ranking": [], "remaining": remaining, "done": 0,
                        "predicted": None, "source": "train", "tail": [], "val_loss": None,
                        "search_steps": 0, "cooldown_lr": lr if cooldown else None}
        if self.cfg.hold_backoff and not cooldown:
            s["exploit"]["monitor"] = backoff.new_monitor()
            s["stage_record"]["backoffs"] = []
        s["lr"] = lr
        if cooldown:
            s["lr"] = _cooldown_lr(self.cfg.cooldown_shape, lr, remaining, remaining)
            s["stage_record"]["first_lr"] = s["lr"]
        self.events.append({"type": "decision", "stage": s["stage"], "lr": lr, "tau": remaining,
                            "predicted_loss": None, "trials": 0, "step": s["steps"],
                            "cooldown": cooldown})
        return [Action("snapshot", slot="stage"), set_lr(s["lr"])]

    def _search(self) -> LRSearch:
        """The stage's LR search (derived from config and stage, so not part of the state;
        kept between calls only to reuse its last GP fit)."""
        cached = self._search_cache
        if cached is not None and cached.stage == self.s["stage"]:
            return cached
        space = SearchSpace(
            min_lr=self._stage_min_lr(), max_lr=self._max_lr(), kappa=self.cfg.kappa,
            acq_optimizer=self.cfg.acq_optimizer, divergence_score=self.cfg.divergence_score,
            # With adaptive trials no trial goes where the stop test already calls the
            # search converged; the reference only never repeats an LR exactly.
            min_spacing_log10=(CONVERGED_LOG10 / 2 if self.cfg.adaptive_trials
                               else SAME_LR_LOG10),
        )
        self._search_cache = LRSearch(space, seed=self.cfg.seed, stage=self.s["stage"])
        return self._search_cache

    def _stage_min_lr(self) -> float:
        """The search's lower end this stage: ``min_lr``, raised with ``max_lr_decay`` to the
        last stage's LR divided by it (short trials favour small LRs, whose quick gain
        fades: the schedule may fall only so fast)."""
        floor = (self.s["stage_record"] or {}).get("lr_floor")
        if floor is None and not self.s["history"]:
            floor = (self.s.get("range_result") or {}).get("first_stage_min_lr")
        return self.cfg.min_lr if floor is None else max(self.cfg.min_lr, floor)

    def _bo_observations(self) -> list[Observation]:
        own = [Observation(o["lr"], o["score"]) for o in self.s["observations"]]
        prior = self._shifted_prior()
        return prior + own

    def _shifted_prior(self) -> list[Observation]:
        """Last stage's scores moved onto this stage's loss scale: the LR the last stage
        exploited, re-tried first, anchors the shift. Empty until that anchor has a score."""
        prior = self.s["prior"]
        if not prior or not self.s["observations"]:
            return []
        anchor = self.s["observations"][0]
        if anchor["score"] is None:
            return []
        offset = anchor["score"] - self._prior_anchor()["score"]
        low = self._stage_min_lr()
        return [Observation(p["lr"], p["score"] + offset, prior=True)
                for p in prior if abs(math.log10(p["lr"]) - math.log10(anchor["lr"])) > 1e-3
                and p["lr"] >= low]

    def _prior_anchor(self) -> dict[str, Any]:
        """The prior point of the LR the last stage exploited (the lowest score when that
        LR was not one of its trials, e.g. after a rollback to a fallback LR)."""
        prior = self.s["prior"]
        chosen = [p for p in prior if p.get("chosen")]
        return chosen[0] if chosen else min(prior, key=lambda p: p["score"])

    def _first_trial_lr(self) -> float:
        if self.cfg.warm_start and self.s["prior"]:
            return self._prior_anchor()["lr"]
        return self._search().propose([], self.s["stage_record"]["reference_loss"])

    def _start_trial(self, lr: float) -> None:
        self.s["trial"] = {"index": len(self.s["observations"]), "lr": lr, "steps": 0,
                           "losses": [], "val_losses": [], "start_step": self.s["steps"]}
        self.s["lr"] = lr
        self.events.append({"type": "trial_start", "stage": self.s["stage"], "lr": lr,
                            "trial": self.s["trial"]["index"], "step": self.s["steps"]})

    # ------------------------------------------------------------ search

    def _diverged(self, loss: float) -> bool:
        """Non-finite, or ``divergence_factor`` times above both the stage's starting loss
        and the run's first loss (a spike near the noise floor is not a divergence)."""
        if not math.isfinite(loss):
            return True
        level = 0.0  # the larger positive one; a loop, not a list: this runs every step
        for value in (self.s["stage_record"]["reference_loss"], self.s["first_loss"]):
            if value is not None and value > level:
                level = value
        return level > 0 and loss > self.cfg.divergence_factor * level

    def _val_every(self) -> int:
        return max(1, self.s["trial_steps"] // VAL_POINTS)

    def _on_trial_step(self, loss: float) -> list[Action]:
        s = self.s
        trial = s["trial"]
        trial["steps"] += 1
        record = s["stage_record"]
        if record["reference_loss"] is None and math.isfinite(loss):
            record["reference_loss"] = loss  # first stage without warmup: its first loss
        if self._diverged(loss):
            return self._end_trial("diverged")
        trial["losses"].append(loss)
        if s["val_mode"] and trial["steps"] % self._val_every() == 0:
            s["awaiting_val"] = "trial"
            return [Action("evaluate")]
        if self._hopeless(trial):
            return self._end_trial("early_stopped")
        if trial["steps"] >= s["trial_steps"]:
            return self._end_trial("completed")
        return []

    def _hopeless(self, trial: dict[str, Any]) -> bool:
        """Early stop: half-way through, the trial's forecast (minus two standard
        deviations) is still worse than the stage's best completed trial's forecast made at
        the same point. Like for like: a half-length series forecasts worse than a full one
        while the loss is still leaving its plateau (the first steps of training). Checked
        once, on the series the trial is scored by (validation losses in validation mode)."""
        s = self.s
        if not self.cfg.early_stop_trials or "partial_forecast" in trial:
            return False
        if s["trial_steps"] // 2 < EARLY_STOP_MIN_STEPS:
            return False  # too short to judge from a part of it
        check_at = round(s["trial_steps"] * EARLY_STOP_AT)
        if trial["steps"] < check_at:
            return False
        if s["val_mode"] and self._forecast_source() == "val":
            if len(trial["val_losses"]) < MIN_POINTS:
                return False
            partial = forecast_loss(trial["val_losses"], s["tau"] // self._val_every(),
                                    is_training=False)
        else:
            partial = forecast_loss(trial["losses"], s["tau"])
        trial["partial_forecast"] = _finite_or_none(partial.value)
        best = self._best_observation()
        if best is None or trial["partial_forecast"] is None:
            return False
        reference = best.get("partial_forecast")
        reference = best["score"] if reference is None else reference
        return partial.value - 2.0 * partial.std > reference

    def _early_stop_score(self, record: dict[str, Any]) -> float | None:
        """An early-stopped trial's score on the scale of full-length ones: the best
        trial's score plus how much worse it was at the same point (a half-length series
        forecasts worse than a full one, so its own forecast would not be comparable)."""
        best = self._best_observation()
        partial = record["partial_forecast"]
        if best is None or partial is None or best.get("partial_forecast") is None:
            return record["score"]
        return best["score"] + max(partial - best["partial_forecast"], 0.0)

    def _best_observation(self) -> dict[str, Any] | None:
        """The best completed trial: the head of ``_ranking``, which puts completed first."""
        ranking = self._ranking()
        best = self.s["observations"][ranking[0]] if ranking else None
        return best if best is not None and best["outcome"] == "completed" else None

    def _forecast_source(self) -> str:
        if not self.s["val_mode"]:
            return "train"
        source = self.cfg.forecast_source
        if source != "auto":
            return source
        errors = self.s["forecast_errors"]
        if not errors["val"] or not errors["train"]:
            return "val"
        train = _mean([abs(e) for e in errors["train"][-3:]])
        val = _mean([abs(e) for e in errors["val"][-3:]])
        return "train" if train < val else "val"

    def _score_trial(self, trial: dict[str, Any]) -> tuple[Forecast, Forecast | None, str]:
        s = self.s
        train = forecast_loss(trial["losses"], s["tau"], is_training=True)
        val = None
        if s["val_mode"] and trial["val_losses"]:
            every = self._val_every()
            val = forecast_loss(trial["val_losses"], s["tau"] // every, is_training=False)
            reference = s["stage_record"]["reference_val_loss"]
            # Reference rule: a trial whose validation loss rose to the stage's starting
            # level is scored by its last validation loss, not an extrapolation.
            if reference is not None and max(trial["val_losses"]) >= reference:
                last = trial["val_losses"][-1]
                val = Forecast(last, val.std, False, "validation loss not below stage start")
        source = self._forecast_source()
        if source == "val" and val is None:
            source = "train"
        return train, val, source

    def _end_trial(self, outcome: str) -> list[Action]:
        s = self.s
        trial = s["trial"]
        record: dict[str, Any] = {
            "lr": trial["lr"], "steps": trial["steps"], "outcome": outcome,
            "start_step": trial["start_step"],
            "score": None, "std": None, "reliable": False, "reason": "",
            "forecast_train": None, "forecast_val": None, "source": None,
            "partial_forecast": trial.get("partial_forecast"),
        }
        if outcome == "diverged":
            record["reason"] = "loss diverged"
        else:
            train, val, source = self._score_trial(trial)
            chosen = val if source == "val" else train
            record.update(
                score=_finite_or_none(chosen.value), std=_finite_or_none(chosen.std),
                reliable=chosen.reliable, reason=chosen.reason, source=source,
                forecast_train=_finite_or_none(train.value),
                forecast_val=None if val is None else _finite_or_none(val.value),
            )
            if outcome == "early_stopped":
                record["reason"] = "stopped early: forecast clearly worse than the best trial"
                record["score"] = self._early_stop_score(record)
            if record["score"] is None:
                record["outcome"] = "diverged"
        s["observations"].append(record)
        self.events.append({"type": "trial_end", "stage": s["stage"], "step": s["steps"],
                            **record, "trial": trial["index"]})
        s["trial"] = None

        actions: list[Action] = []
        best = self._best_observation()
        is_best = best is record
        searching = self._keep_searching()
        bracket_lr = None if searching else self._bracket_lr()
        searching = searching or bracket_lr is not None
        if self.cfg.keep_best_trial and is_best and searching:
            actions.append(Action("snapshot", slot="best"))
            s["best_saved"] = len(s["observations"]) - 1
        if not searching:
            return actions + self._begin_exploit(rank=0, last_trial_is_best=is_best)
        next_lr = bracket_lr or self._search().propose(self._bo_observations(),
                                                       s["stage_record"]["reference_loss"])
        self._start_trial(next_lr)
        return actions + [Action("restore", slot="stage"), set_lr(next_lr)]

    def _keep_searching(self) -> bool:
        s = self.s
        if not self._budget_for_trial():
            return False
        done = len(s["observations"])
        # Without a warm-start prior the GP knows less: ask for twice the minimum.
        minimum = self.cfg.min_trials if self.s["prior"] else 2 * self.cfg.min_trials
        if not self.cfg.adaptive_trials or done < minimum:
            return True
        best = self._best_observation()
        if best is None:
            return True
        bound, where = self._search().lower_bound(self._bo_observations(), ADAPTIVE_KAPPA,
                                                  s["stage_record"]["reference_loss"])
        if all(o["score"] >= 0 for o in s["observations"] if o["score"] is not None):
            # A loss forecast never goes below 0: a GP bound under it promises nothing
            # (several trials forecast at that floor kept digits' first stage searching).
            bound = max(bound, 0.0)
        margin = max(ADAPTIVE_MARGIN * abs(best["score"]), 0.5 * (best["std"] or 0.0))
        if best["score"] - bound <= margin:
            return False  # nowhere does the GP still promise a meaningful improvement
        # The most promising point is next to one already measured: the search converged.
        tried = [o["lr"] for o in s["observations"]]
        return min(abs(math.log10(where) - math.log10(t)) for t in tried) > CONVERGED_LOG10

    def _budget_for_trial(self) -> bool:
        """Under the trial cap k, and enough budget left for one more trial."""
        if len(self.s["observations"]) >= self.cfg.trials_per_stage:
            return False
        remaining = self._search_remaining()
        return remaining is None or remaining > self.s["trial_steps"]

    def _bracket_lr(self) -> float | None:
        """With ``bracket_search``, the search stops only once this stage's own trials
        bracket the best LR (see ``_open_side_lr``); until then, the LR to try next.

        The GP can settle on a flat, warm-started neighbourhood after three trials close
        together; one trial a few times above or below the best shows whether the
        optimum has moved since the last stage (the schedule's usual way to change)."""
        if not self.cfg.bracket_search or not self._budget_for_trial():
            return None
        best = self._best_observation()
        return None if best is None else self._open_side_lr(best)

    def _open_side_lr(self, best: dict[str, Any]) -> float | None:
        """None when a worse (or diverged, or stopped) trial lies within BRACKET_LOG10
        decades on each side of ``best``, or that side is the interval's end; else an LR
        BRACKET_STEP_LOG10 decades out on the open side (above first: too small an LR is
        the costlier mistake)."""
        here = math.log10(best["lr"])
        others = [math.log10(o["lr"]) for o in self.s["observations"] if o is not best]
        low, high = math.log10(self._stage_min_lr()), math.log10(self._max_lr())
        for side in (1, -1):
            edge = high if side > 0 else low
            if abs(edge - here) <= SAME_LR_LOG10:
                continue
            if any(0 < side * (x - here) <= BRACKET_LOG10 for x in others):
                continue
            lr = 10 ** (here + side * BRACKET_STEP_LOG10)
            return float(min(max(lr, self._stage_min_lr()), self._max_lr()))
        return None

    # ------------------------------------------------------------ exploit

    def _ranking(self) -> list[int]:
        """Indices of the stage's trials with a score, best first (see
        ``_selection_keys``)."""
        obs = self.s["observations"]
        keys = self._selection_keys()
        # A trial stopped early was judged worse than a completed one: never ahead of it.
        return sorted(keys, key=lambda i: (obs[i]["outcome"] != "completed", keys[i], i))

    def _selection_keys(self) -> dict[int, tuple[float, float]]:
        """Each scored trial's sort key, smaller is better. Risk-averse selection ranks by
        ``score + std`` so a shaky extrapolation does not beat a sound one; trials whose
        forecast sits at the floor of zero take the place of the best of them, smallest
        LR first."""
        obs = self.s["observations"]
        keys = {i: (self._selection_score(o), 0.0) for i, o in enumerate(obs)
                if o["score"] is not None}
        non_negative = all(obs[i]["score"] >= 0.0 for i in keys)
        if self.cfg.floor_ties and non_negative:
            # Forecasts clipped to a non-negative loss's floor say only "this reaches zero";
            # their std then measures the tail's height, which favours the largest LR. Tied
            # at the floor, the smallest LR is the safer one (and, on a memorised training
            # set, the one that generalises: digits' best constant LR is its smallest).
            floored = [i for i in keys if obs[i]["outcome"] == "completed"
                       and obs[i]["score"] == 0.0]
            if len(floored) > 1:
                tied = min(keys[i][0] for i in floored)
                keys.update({i: (tied, obs[i]["lr"]) for i in floored})
        return keys

    def _selection_score(self, observation: dict[str, Any]) -> float:
        if self.cfg.risk_averse:
            return observation["score"] + (observation["std"] or 0.0)
        return observation["score"]

    def _begin_exploit(self, rank: int, last_trial_is_best: bool = False) -> list[Action]:
        s = self.s
        ranking = self._ranking()
        record = s["stage_record"]
        actions: list[Action] = []
        if rank < len(ranking):
            chosen = s["observations"][ranking[rank]]
            lr, predicted = chosen["lr"], chosen["score"]
        else:
            # Every trial diverged (or every candidate failed in exploit): fall back to a
            # tenth of the smallest LR tried, never below min_lr.
            tried = [o["lr"] for o in s["observations"]] or [self.cfg.min_lr * 10]
            lr, predicted = max(min(tried) / 10, self.cfg.min_lr), None
        remaining = s["tau"]
        kept_steps = 0
        continue_from_trial = (
            rank == 0 and self.cfg.keep_best_trial and ranking
            and s["observations"][ranking[0]]["outcome"] == "completed"
        )
        if continue_from_trial and last_trial_is_best:
            if s["best_saved"] is not None:  # an earlier trial's end state, now beaten
                actions.append(Action("drop", slot="best"))
            remaining = s["tau"] - s["trial_steps"]
            kept_steps = s["trial_steps"]
        elif continue_from_trial and s["best_saved"] == ranking[0]:
            actions += [Action("restore", slot="best"), Action("drop", slot="best")]
            remaining = s["tau"] - s["trial_steps"]
            kept_steps = s["trial_steps"]
        else:
            actions.append(Action("restore", slot="stage"))
            if s["best_saved"] is not None:
                actions.append(Action("drop", slot="best"))
        s["best_saved"] = None
        left = self._search_remaining()
        if left is not None and record["final"]:
            # The last stage fills the budget: its search may have needed fewer than the
            # k trials its length was fitted for, and a second, tiny stage would search
            # again for a few steps of use.
            remaining = left
        elif left is not None and self.cfg.fit_final_stage:
            # After a rollback an exploit starts over: it still ends where the search
            # budget does (the cooldown starts there, or the budget ends).
            remaining = min(remaining, left)
        search_steps = s["steps"] - record["start_step"]
        s["phase"] = "exploit"
        s["exploit"] = {"lr": lr, "rank": rank, "ranking": ranking, "remaining": max(remaining, 1),
                        "done": 0, "predicted": predicted, "source": None, "tail": [],
                        "val_loss": None, "search_steps": search_steps,
                        "kept_steps": kept_steps}
        if rank < len(ranking):
            s["exploit"]["source"] = s["observations"][ranking[rank]]["source"]
        s["lr"] = lr
        self.events.append({"type": "decision", "stage": s["stage"], "lr": lr, "tau": s["tau"],
                            "predicted_loss": predicted, "trials": len(s["observations"]),
                            "rank": rank, "step": s["steps"]})
        return actions + [set_lr(lr)]

    def _on_exploit_step(self, loss: float) -> list[Action]:
        s = self.s
        exploit = s["exploit"]
        if self._diverged(loss):
            return self._rollback(loss)
        exploit["done"] += 1
        tail = exploit["tail"]
        tail.append(loss)
        del tail[:-RECENT_LOSSES]
        if exploit.get("cooldown_lr") is not None:
            left = max(exploit["remaining"] - exploit["done"], 0)
            s["lr"] = _cooldown_lr(self.cfg.cooldown_shape, exploit["cooldown_lr"], left,
                                   exploit["remaining"])
            return []
        if self._climbing(exploit, loss):
            return self._back_off(loss)
        if self._stalled(exploit):
            return self._rollback(loss, reason="stalled")
        if exploit["done"] < exploit["remaining"]:
            return []
        if s["has_val"] and (s["val_mode"] or self.cfg.forecast_source == "auto"):
            s["awaiting_val"] = "exploit_end"
            return [Action("evaluate")]
        return self._end_stage()

    def _stalled(self, exploit: dict[str, Any]) -> bool:
        """With ``stall_rollback``: half-way through a stage's exploit or at its end, the
        training loss has made less than a tenth of the drop its trial forecast (a drop of at least 20%
        of the stage's starting loss). A short trial can look good at an LR on the edge of
        stability that then stops learning altogether (dead units): without this the whole
        stage, and every later one, pays for it."""
        record = self.s["stage_record"]
        if not self.cfg.stall_rollback or record["trial_steps"] == 0:
            return False
        checks = (max(exploit["remaining"] // 2, RECENT_LOSSES), exploit["remaining"])
        if record["final"]:
            # Rolling back at the end of the last stage would throw the stage away with no
            # budget left to redo it: only the half-way check.
            checks = checks[:1]
        if exploit["done"] not in checks:
            return False
        reference = record["reference_loss"]
        promised = _winner_field(self.s, "forecast_train")
        finite = [v for v in exploit["tail"] if math.isfinite(v)]
        if reference is None or promised is None or not finite:
            return False
        expected_drop = reference - promised
        if expected_drop < STALL_MIN_DROP * max(abs(reference), self._loss_floor()):
            return False  # a plateau stage (or losses near zero): nothing much was promised
        return reference - _mean(finite) < STALL_FRACTION * expected_drop

    def _climbing(self, exploit: dict[str, Any], loss: float) -> bool:
        """With ``hold_backoff``, in a stage with no search: the training loss's latest
        block mean climbed clearly above its lowest (``backoff.observe``), and the LR can
        still be lowered."""
        monitor = exploit.get("monitor")
        if monitor is None:
            return False
        return (backoff.observe(monitor, loss, self._loss_floor())
                and exploit["lr"] > self.cfg.min_lr)

    def _loss_floor(self) -> float:
        """The loss level relative changes are measured against at the least: a twentieth
        of the run's first loss (a memorised training set's near-zero loss moves by noise
        alone)."""
        return LOSS_FLOOR_FRACTION * abs(self.s["first_loss"] or 0.0)

    def _back_off(self, loss: float) -> list[Action]:
        """Lower the held LR by ``backoff.FACTOR`` (not below min_lr) and keep training from
        where it is: a rollback to the stage snapshot would throw away every step since
        the hold began."""
        s = self.s
        exploit = s["exploit"]
        lr = max(exploit["lr"] * backoff.FACTOR, self.cfg.min_lr)
        s["stage_record"]["backoffs"].append(
            {"step": s["steps"], "from_lr": exploit["lr"], "lr": lr,
             "loss": _finite_or_none(loss), "best_block_loss": exploit["monitor"]["best"]})
        self.events.append({"type": "backoff", "stage": s["stage"], "step": s["steps"],
                            "from_lr": exploit["lr"], "lr": lr})
        exploit["lr"] = lr
        exploit["monitor"] = backoff.new_monitor()
        s["lr"] = lr
        return [set_lr(lr)]

    def _rollback(self, loss: float, reason: str = "diverged") -> list[Action]:
        """Exploit diverged (or stalled): back to the stage snapshot, continue with the
        next-best LR."""
        s = self.s
        exploit = s["exploit"]
        s["stage_record"]["rollbacks"].append(
            {"lr": exploit["lr"], "step": s["steps"], "loss": _finite_or_none(loss),
             "reason": reason})
        self.events.append({"type": "rollback", "stage": s["stage"], "lr": exploit["lr"],
                            "step": s["steps"], "reason": reason})
        rank = exploit["rank"] + 1
        record = s["stage_record"]
        if record["trial_steps"] == 0:  # final exploit without search: halve the LR
            exploit.update(lr=exploit["lr"] / 2, done=0, tail=[])
            if "monitor" in exploit:  # the restored model's loss starts over
                exploit["monitor"] = backoff.new_monitor()
            cooldown = exploit.get("cooldown_lr") is not None
            if cooldown:
                exploit["cooldown_lr"] = exploit["lr"]
            left = self._remaining() if cooldown else self._search_remaining()
            if left is not None:  # it starts over, and still ends where it was to end
                exploit["remaining"] = max(left, 1)
            s["lr"] = exploit["lr"]
            if cooldown:
                s["lr"] = _cooldown_lr(self.cfg.cooldown_shape, exploit["lr"],
                                       exploit["remaining"], exploit["remaining"])
            return [Action("restore", slot="stage"), set_lr(s["lr"])]
        actions = self._begin_exploit(rank)
        if actions[0].kind != "restore" or actions[0].slot != "stage":
            actions.insert(0, Action("restore", slot="stage"))
        return actions

    def _end_stage(self) -> list[Action]:
        s = self.s
        exploit, record = s["exploit"], s["stage_record"]
        actual = _mean(exploit["tail"])
        error_train = _relative_error(
            _winner_field(s, "forecast_train"), actual)
        error_val = _relative_error(_winner_field(s, "forecast_val"), exploit["val_loss"])
        if error_train is not None:
            s["forecast_errors"]["train"].append(error_train)
        if error_val is not None:
            s["forecast_errors"]["val"].append(error_val)
        error = error_val if exploit["source"] == "val" else error_train
        trials = s["observations"]
        outcomes = Counter(o["outcome"] for o in trials)
        saturated = self._training_loss_saturated()
        record.update(
            lr=exploit["lr"], predicted_loss=exploit["predicted"], forecast_source=exploit["source"],
            actual_loss=actual, val_loss=exploit["val_loss"], forecast_error=error,
            forecast_error_train=error_train, forecast_error_val=error_val,
            trials=trials, trials_completed=outcomes["completed"],
            trials_early_stopped=outcomes["early_stopped"], trials_diverged=outcomes["diverged"],
            search_steps=exploit["search_steps"], kept_steps=exploit.get("kept_steps", 0),
            exploit_steps=s["steps"] - record["start_step"] - exploit["search_steps"],
            end_step=s["steps"], saturated=saturated,
        )
        s["history"].append(record)
        s["stage_record"] = None
        self.events.append({"type": "stage_end", "stage": s["stage"], "step": s["steps"],
                            "lr": exploit["lr"], "forecast_error": error, "actual_loss": actual,
                            "saturated": saturated})
        # Warm start: this stage's scored trials inform the next stage's GP.
        s["prior"] = [{"lr": o["lr"], "score": o["score"], "chosen": o["lr"] == exploit["lr"]}
                      for o in trials if o["score"] is not None] if self.cfg.warm_start else []
        if exploit["val_loss"] is not None:
            s["last_val_loss"] = exploit["val_loss"]
        s["stage"] += 1
        if saturated:
            s["val_mode"] = True
        if s["tau"] < self.cfg.tau_max and not record["final"]:
            s["tau"] = min(s["tau"] * 2, self.cfg.tau_max)
            s["trial_steps"] = self.cfg.trial_steps_for(s["tau"])
        elif s["has_val"] and not record["final"]:
            s["val_mode"] = True
        s["exploit"] = None
        if self._remaining() is not None and self._remaining() <= 0:
            return self._finish("max_steps reached")
        return self._begin_stage()

    def _training_loss_saturated(self) -> bool:
        """With ``saturation_validation``: the exploited trial was scored on the training
        loss and forecast it at zero (the forecast's floor). A training loss on its way to
        zero is being memorised and no longer tells LRs apart (forecasts at the floor
        leave the ranking to the trials' last losses and noise, where a smaller LR's
        immediate drop wins); the validation loss still does. Digits and MNIST-1D reach
        that floor after a few hundred steps."""
        s = self.s
        if not self.cfg.saturation_validation or not s["has_val"] or s["val_mode"]:
            return False
        chosen = _exploited_trial(s)
        return (chosen is not None and chosen["source"] == "train"
                and chosen["score"] is not None and chosen["score"] <= 0.0)

    # ------------------------------------------------------------ end

    def _finish(self, reason: str) -> list[Action]:
        """Budget spent: close the stage in progress, then stop."""
        s = self.s
        actions = self._close_stage()
        s["phase"] = "done"
        s["trial"] = None
        s["awaiting_val"] = None
        self.events.append({"type": "done", "step": s["steps"], "reason": reason})
        return actions + [Action("done")]

    def _close_stage(self) -> list[Action]:
        """End the stage in progress before its time (budget spent, or the cooldown is
        due) and record it. Mid-search, leave the model in the best state known, not a
        trial's, at that state's LR."""
        s = self.s
        actions: list[Action] = []
        if s.get("range") is not None:  # mid-sweep: its model state and LR are throwaway
            s["range"] = None
            s["lr"] = self.cfg.min_lr
            return [Action("restore", slot="stage"), set_lr(s["lr"])]
        if s["phase"] == "search":
            best = self._best_observation()
            if s["best_saved"] is not None:
                actions += [Action("restore", slot="best"), Action("drop", slot="best")]
                s["lr"] = s["observations"][s["best_saved"]]["lr"]
            else:
                actions.append(Action("restore", slot="stage"))
                if best is not None:
                    s["lr"] = best["lr"]
                elif s["history"]:
                    s["lr"] = s["history"][-1]["lr"]
            actions.append(set_lr(s["lr"]))
        if s["phase"] in ("search", "exploit") and s["stage_record"] is not None:
            record = s["stage_record"]
            exploit = s["exploit"] or {}
            cooldown_lr = exploit.get("cooldown_lr")
            record.update(lr=s["lr"] if cooldown_lr is None else cooldown_lr,
                          end_step=s["steps"], trials=s["observations"],
                          incomplete=cooldown_lr is None, predicted_loss=exploit.get("predicted"))
            if cooldown_lr is not None:  # a cooldown ends here as planned
                record.update(end_lr=s["lr"], search_steps=0, actual_loss=_mean(exploit["tail"]),
                              exploit_steps=s["steps"] - record["start_step"])
                self.events.append({"type": "stage_end", "stage": s["stage"], "step": s["steps"],
                                    "lr": cooldown_lr, "forecast_error": None,
                                    "actual_loss": record["actual_loss"]})
            s["history"].append(record)
        s["trial"] = None
        s["exploit"] = None
        s["stage_record"] = None
        s["observations"] = []
        s["best_saved"] = None
        return actions


def _cooldown_lr(shape: str, start_lr: float, left: int, total: int) -> float:
    """The LR of a cooldown step with ``left`` of its ``total`` steps to go (``left ==
    total``: its first step). ``linear`` falls from ``start_lr`` to ``start_lr / total``;
    ``drop`` first cuts it to COOLDOWN_DROP of that (the annealing gain comes at once, not
    after hundreds of steps at in-between LRs in which a small data set is memorised)."""
    scale = COOLDOWN_DROP if shape == "drop" else 1.0
    return start_lr * scale * left / total


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _relative_error(predicted: float | None, actual: float | None) -> float | None:
    if predicted is None or actual is None or actual == 0:
        return None
    return (predicted - actual) / abs(actual)


def _exploited_trial(state: dict[str, Any]) -> dict[str, Any] | None:
    """The observation whose LR the exploit runs (None for the fallback LR, which no trial
    measured)."""
    exploit = state["exploit"]
    ranking = exploit["ranking"]
    if exploit["rank"] >= len(ranking):
        return None
    return state["observations"][ranking[exploit["rank"]]]


def _winner_field(state: dict[str, Any], field: str) -> float | None:
    trial = _exploited_trial(state)
    return None if trial is None else trial[field]
