"""AutoLRSConfig: the one typed configuration of the algorithm, its presets and validation.

Field names are a contract (DESIGN.md): snake_case here, camelCase in the AutoLRSJob's
``spec.autolrs`` and in the ``AUTOLRS_CONFIG`` environment variable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

CONFIG_ENV = "AUTOLRS_CONFIG"
PRESETS = ("default", "paper")
# How the cooldown lowers the LR: ``linear`` from the last stage's LR to 0; ``drop`` to a
# tenth of it at once, then linearly to 0.
COOLDOWN_SHAPES = ("linear", "drop")

# Values a preset gives to every field the user left as None. `paper` is the reference
# AutoLRS (Jin et al., ICLR 2021) exactly; `default` is ours (see README, "Ablation").
PRESET_VALUES: dict[str, dict[str, Any]] = {
    "paper": {
        "kappa": 1e6,
        "keep_best_trial": False,
        "early_stop_trials": False,
        "adaptive_trials": False,
        "warm_start": False,
        "fit_final_stage": False,
        "forecast_source": "val",
        "acq_optimizer": "lbfgs",
        "divergence_score": 1e6,
        "risk_averse": False,
        "bracket_search": False,
        "early_validation": False,
        "max_lr_decay": 0.0,
        "stall_rollback": False,
        "cooldown": 0.0,
        "min_trial_steps": 1,
        "range_test": False,
        "hold_final_stage": False,
        "cooldown_shape": "linear",
        "saturation_validation": False,
        "hold_backoff": False,
        "floor_ties": False,
    },
    "default": {
        "kappa": 1.96,
        "keep_best_trial": True,
        "early_stop_trials": True,
        "adaptive_trials": True,
        "warm_start": True,
        "fit_final_stage": True,
        "forecast_source": "auto",
        "acq_optimizer": "sampling",
        "divergence_score": None,
        "risk_averse": True,
        "bracket_search": True,
        "early_validation": False,
        "max_lr_decay": 2.0,
        "stall_rollback": True,
        "cooldown": 0.2,
        "min_trial_steps": 40,
        "range_test": True,
        "hold_final_stage": True,
        "cooldown_shape": "drop",
        "saturation_validation": True,
        "hold_backoff": True,
        "floor_ties": True,
    },
}

# snake_case field -> camelCase key used by the CRD and AUTOLRS_CONFIG.
CAMEL_NAMES: dict[str, str] = {
    "min_lr": "minLR",
    "max_lr": "maxLR",
    "tau": "tau",
    "tau_max": "tauMax",
    "trials_per_stage": "trialsPerStage",
    "trial_fraction": "trialFraction",
    "kappa": "kappa",
    "warmup_steps": "warmupSteps",
    "warmup_lr": "warmupLR",
    "max_steps": "maxSteps",
    "seed": "seed",
    "preset": "preset",
    "keep_best_trial": "keepBestTrial",
    "early_stop_trials": "earlyStopTrials",
    "adaptive_trials": "adaptiveTrials",
    "min_trials": "minTrials",
    "warm_start": "warmStart",
    "fit_final_stage": "fitFinalStage",
    "forecast_source": "forecastSource",
    "acq_optimizer": "acqOptimizer",
    "divergence_factor": "divergenceFactor",
    "divergence_score": "divergenceScore",
    "risk_averse": "riskAverse",
    "bracket_search": "bracketSearch",
    "early_validation": "earlyValidation",
    "max_lr_decay": "maxLRDecay",
    "stall_rollback": "stallRollback",
    "cooldown": "cooldown",
    "min_trial_steps": "minTrialSteps",
    "range_test": "rangeTest",
    "hold_final_stage": "holdFinalStage",
    "cooldown_shape": "cooldownShape",
    "saturation_validation": "saturationValidation",
    "hold_backoff": "holdBackoff",
    "floor_ties": "floorTies",
    "lr_scaling": "lrScaling",
    "reference_batch_size": "referenceBatchSize",
}
SNAKE_NAMES = {camel: snake for snake, camel in CAMEL_NAMES.items()}


@dataclass
class AutoLRSConfig:
    """How AutoLRS searches: the LR interval, stage lengths, trials, budget and preset.

    Fields left as ``None`` take the preset's value when the config is resolved.
    """

    min_lr: float | None = None
    max_lr: float | None = None
    tau: int = 1000
    tau_max: int = 8000
    trials_per_stage: int = 10
    trial_fraction: float = 0.1
    kappa: float | None = None
    warmup_steps: int = 0
    warmup_lr: float | None = None
    max_steps: int | None = None
    seed: int = 0
    preset: str = "default"
    # Our improvements over the reference (issue: halve what the search costs).
    keep_best_trial: bool | None = None
    early_stop_trials: bool | None = None
    adaptive_trials: bool | None = None
    min_trials: int = 3
    warm_start: bool | None = None
    fit_final_stage: bool | None = None
    forecast_source: str | None = None
    acq_optimizer: str | None = None
    divergence_factor: float = 4.0
    divergence_score: float | None = None
    risk_averse: bool | None = None
    bracket_search: bool | None = None
    early_validation: bool | None = None
    max_lr_decay: float | None = None
    stall_rollback: bool | None = None
    cooldown: float | None = None
    min_trial_steps: int | None = None
    range_test: bool | None = None
    hold_final_stage: bool | None = None
    cooldown_shape: str | None = None
    # Score trials on validation loss from the stage after one whose chosen training-loss
    # forecast was zero (the training loss is memorised: it no longer ranks LRs).
    saturation_validation: bool | None = None
    # In a stage with no search (the held one), halve the LR whenever the training loss's
    # block mean climbs clearly above its lowest (engine/backoff.py).
    hold_backoff: bool | None = None
    # Selection among trials whose forecast sits at the floor of zero, with or without
    # risk_averse: tied, they take the best one's place, smallest LR first
    # (engine/controller.py).
    floor_ties: bool | None = None
    # Distributed: rescale [min_lr, max_lr] with the global batch size.
    lr_scaling: str = "none"
    reference_batch_size: int | None = None

    _resolved: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._coerce_types()
        self.validate()

    # ----------------------------------------------------------------- building

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AutoLRSConfig":
        """Build from snake_case or camelCase keys; unknown keys are an error, not ignored."""
        kwargs: dict[str, Any] = {}
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        for key, value in data.items():
            name = SNAKE_NAMES.get(key, key)
            if name not in known:
                allowed = ", ".join(sorted(CAMEL_NAMES.values()))
                raise ValueError(f"unknown AutoLRS config field {key!r}; allowed: {allowed}")
            if name in kwargs:
                raise ValueError(
                    f"AutoLRS config field {CAMEL_NAMES[name]!r} is given twice (as "
                    f"{CAMEL_NAMES[name]!r} and {name!r}); keep one"
                )
            kwargs[name] = value
        return cls(**kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "AutoLRSConfig":
        """Read ``AUTOLRS_CONFIG`` (JSON of the job's spec.autolrs)."""
        environ = os.environ if environ is None else environ
        raw = environ.get(CONFIG_ENV)
        if raw is None or not raw.strip():
            raise ValueError(
                f"{CONFIG_ENV} is not set: pass an AutoLRSConfig to AutoLRS(...) or set "
                f'{CONFIG_ENV} to JSON such as {{"minLR": 0.001, "maxLR": 1.0}}'
            )
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{CONFIG_ENV} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{CONFIG_ENV} must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self, camel: bool = False) -> dict[str, Any]:
        """The fields as a JSON-able dict (camelCase keys when ``camel``)."""
        out = {
            f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")
        }
        if camel:
            return {CAMEL_NAMES[k]: v for k, v in out.items()}
        return out

    def resolved(self) -> "AutoLRSConfig":
        """A copy with every ``None`` filled from the preset (warmup_lr from max_lr)."""
        values = self.to_dict()
        for name, preset_value in PRESET_VALUES[self.preset].items():
            if values[name] is None:
                values[name] = preset_value
        if values["max_steps"] is None and self.cooldown is None:
            values["cooldown"] = 0.0  # no budget to end: the preset's cooldown does not apply
        if self.min_trial_steps is None:
            # The preset's floor gives way to short stages: at most a quarter of tau.
            values["min_trial_steps"] = max(1, min(values["min_trial_steps"], self.tau // 4))
        if values["warmup_lr"] is None:
            values["warmup_lr"] = values["max_lr"]
        out = dataclasses.replace(self, **values)
        out._resolved = True
        return out

    def differences(self, other: "AutoLRSConfig") -> list[str]:
        """``"field <mine> (given <other's>)"`` for each field that differs (floats within
        1e-9 relative count as equal: a rescaled LR interval round-trips inexactly)."""
        out = []
        theirs = other.to_dict()
        for name, value in self.to_dict().items():
            given = theirs[name]
            same = (math.isclose(value, given, rel_tol=1e-9)
                    if isinstance(value, float) and isinstance(given, (int, float))
                    and not isinstance(given, bool) else value == given)
            if not same:
                out.append(f"{name} {value!r} (given {given!r})")
        return out

    def scaled_for_batch(self, global_batch_size: int) -> "AutoLRSConfig":
        """Rescale the LR interval by ``lr_scaling`` (linear or sqrt) for a new global batch."""
        if self.lr_scaling == "none":
            return self
        if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int) \
                or global_batch_size < 1:
            raise ValueError(f"the global batch size must be an integer >= 1, got {global_batch_size!r}")
        ratio = global_batch_size / self.reference_batch_size
        factor = ratio if self.lr_scaling == "linear" else math.sqrt(ratio)
        warmup_lr = None if self.warmup_lr is None else self.warmup_lr * factor
        return dataclasses.replace(
            self, min_lr=self.min_lr * factor, max_lr=self.max_lr * factor, warmup_lr=warmup_lr
        )

    # --------------------------------------------------------------- validation

    def _coerce_types(self) -> None:
        """Accept ints for floats (JSON has one number type); reject bools and strings."""
        for f in fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            kind = str(f.type)
            if kind.startswith("float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{f.name} must be a number, got {value!r}")
                setattr(self, f.name, float(value))
            elif kind.startswith("int"):
                if isinstance(value, bool) or not (
                    isinstance(value, int) or (isinstance(value, float) and value.is_integer())
                ):
                    raise ValueError(f"{f.name} must be an integer, got {value!r}")
                setattr(self, f.name, int(value))
            elif kind.startswith("bool"):
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be true or false, got {value!r}")
            elif kind.startswith("str"):
                if not isinstance(value, str):
                    raise ValueError(f"{f.name} must be a string, got {value!r}")

    def validate(self) -> None:
        """Raise ValueError naming the first bad field, its value and the allowed range."""
        if self.min_lr is None or self.max_lr is None:
            missing = "min_lr" if self.min_lr is None else "max_lr"
            raise ValueError(
                f"{missing} is required: give the LR search interval, e.g. "
                "AutoLRSConfig(min_lr=1e-3, max_lr=1.0), or run an LR range test"
            )
        _finite_positive("min_lr", self.min_lr)
        _finite_positive("max_lr", self.max_lr)
        if not self.min_lr < self.max_lr:
            raise ValueError(
                f"min_lr must be > 0 and < max_lr, got min_lr={self.min_lr} max_lr={self.max_lr}"
            )
        if self.tau < 10:
            raise ValueError(f"tau must be an integer >= 10, got {self.tau}")
        if self.tau_max < self.tau:
            raise ValueError(f"tau_max must be >= tau ({self.tau}), got {self.tau_max}")
        if not 1 <= self.trials_per_stage <= 100:
            raise ValueError(f"trials_per_stage must be in [1, 100], got {self.trials_per_stage}")
        if not (0.0 < self.trial_fraction <= 0.5):
            raise ValueError(f"trial_fraction must be in (0, 0.5], got {self.trial_fraction}")
        if self.kappa is not None and not (math.isfinite(self.kappa) and self.kappa >= 0):
            raise ValueError(f"kappa must be a finite number >= 0, got {self.kappa}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_lr is not None:
            _finite_positive("warmup_lr", self.warmup_lr)
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or null for no limit), got {self.max_steps}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not 1 <= self.min_trials <= 100:
            raise ValueError(f"min_trials must be in [1, 100], got {self.min_trials}")
        if self.forecast_source is not None and self.forecast_source not in ("train", "val", "auto"):
            raise ValueError(
                f"forecast_source must be one of train, val, auto, got {self.forecast_source!r}"
            )
        if self.acq_optimizer is not None and self.acq_optimizer not in ("sampling", "lbfgs"):
            raise ValueError(
                f"acq_optimizer must be one of sampling, lbfgs, got {self.acq_optimizer!r}"
            )
        if not (math.isfinite(self.divergence_factor) and self.divergence_factor > 1):
            raise ValueError(f"divergence_factor must be a number > 1, got {self.divergence_factor}")
        if self.divergence_score is not None and not math.isfinite(self.divergence_score):
            raise ValueError(f"divergence_score must be finite, got {self.divergence_score}")
        if self.max_lr_decay is not None and not (
            self.max_lr_decay == 0 or (math.isfinite(self.max_lr_decay) and self.max_lr_decay > 1)
        ):
            raise ValueError(
                f"max_lr_decay must be 0 (no limit) or a number > 1, got {self.max_lr_decay}"
            )
        if self.cooldown is not None:
            if not (math.isfinite(self.cooldown) and 0 <= self.cooldown <= 0.5):
                raise ValueError(
                    f"cooldown must be a fraction of max_steps in [0, 0.5], got {self.cooldown}"
                )
            if self.cooldown > 0 and self.max_steps is None:
                raise ValueError(
                    f"cooldown={self.cooldown} needs max_steps: the LR decays to 0 over the "
                    "last part of a known budget (set max_steps, or cooldown to 0)"
                )
        if self.cooldown_shape is not None and self.cooldown_shape not in COOLDOWN_SHAPES:
            raise ValueError(f"cooldown_shape must be one of {', '.join(COOLDOWN_SHAPES)}, "
                             f"got {self.cooldown_shape!r}")
        if self.min_trial_steps is not None and not 1 <= self.min_trial_steps <= self.tau // 2:
            raise ValueError(
                f"min_trial_steps must be in [1, tau/2] = [1, {self.tau // 2}] (a trial "
                f"longer than half a stage leaves it no exploit), got {self.min_trial_steps}"
            )
        if self.lr_scaling not in ("none", "linear", "sqrt"):
            raise ValueError(f"lr_scaling must be one of none, linear, sqrt, got {self.lr_scaling!r}")
        if self.lr_scaling != "none" and self.reference_batch_size is None:
            raise ValueError(
                f"reference_batch_size is required when lr_scaling is {self.lr_scaling!r} "
                "(the global batch size [min_lr, max_lr] was chosen for)"
            )
        if self.reference_batch_size is not None and self.reference_batch_size < 1:
            raise ValueError(
                f"reference_batch_size must be >= 1, got {self.reference_batch_size}"
            )

    @property
    def cooldown_steps(self) -> int:
        """Steps at the end of ``max_steps`` in which the LR decays linearly to 0 (resolved
        config; 0 without a budget)."""
        if not self.cooldown or self.max_steps is None:
            return 0
        return int(round(self.max_steps * self.cooldown))

    @property
    def trial_steps(self) -> int:
        """tau' for the first stage: ``tau * trial_fraction``, at least ``min_trial_steps``."""
        return self.trial_steps_for(self.tau)

    def trial_steps_for(self, tau: int) -> int:
        """tau' for a stage of ``tau`` steps: ``tau * trial_fraction``, at least
        ``min_trial_steps`` (resolved config; unresolved: no floor)."""
        return max(1, round(tau * self.trial_fraction), self.min_trial_steps or 1)


def _finite_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
