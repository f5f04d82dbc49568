"""The one table of hyperparameters: each name, its allowed values or range, and its default.

Validation of space files (search/door/spec.py) and the trainable (trainables/classifier.py) both read
this table, so a hyperparameter is declared here and nowhere else. Plain Python: importing this module
must stay cheap (no torch), because `tune-run --dry-run` uses it.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: a set of choices, or a numeric range.

    A numeric range is `low <= x <= high`; `low_open` / `high_open` make that end strict.
    """

    name: str
    default: Any
    help: str
    choices: tuple | None = None
    kind: type = float
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    optional: bool = False  # None is allowed (and is the default)

    def check(self, value: Any) -> str | None:
        """Returns None when `value` is allowed, else what is wrong and what would be right."""
        if value is None and self.optional:
            return None
        if self.choices is not None:
            if value in self.choices and type(value) is type(self.choices[0]):
                return None
            hint = suggest(value, self.choices)
            allowed = ", ".join(repr(c) for c in self.choices)
            return f"{value!r} is not one of {allowed}{hint}"
        if self.kind is str:
            return None if isinstance(value, str) else f"must be a string, got {value!r}"
        if self.kind is dict:
            return None if isinstance(value, dict) else f"must be a dict, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        if self.kind is int and not float(value).is_integer():
            return f"must be a whole number, got {value!r}"
        if not self.in_range(value):
            return f"must be in {self.range_text()}, got {value!r}"
        return None

    def in_range(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below and not math.isnan(value)

    def range_text(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{_num(self.low)}, {_num(self.high)}{right}"

    def take(self, value: Any) -> Any:
        """A value that passed `check`, in the kind the table declares: 3000.0 of an int is 3000."""
        return int(value) if self.kind is int and value is not None else value


def _num(x: float) -> str:
    return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"


def suggest(value: Any, choices: tuple | list) -> str:
    """A '; did you mean X?' suffix when a close choice exists, else ''."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


PRECISIONS = ("auto", "fp32", "bf16")  # what core/precision.py's resolve_mode takes
OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad", "adadelta", "rmsprop")
SCHEDULES = ("constant", "step", "multistep", "exponential", "cosine", "onecycle")
PRUNE_METHODS = ("unstructured", "channel")  # what core/pruning.py's make_pruner takes
ACTIVATIONS = ("relu", "leaky_relu", "elu", "prelu", "gelu")

_TABLE = (
    HParam("optimizer", "sgd", "torch.optim algorithm", choices=OPTIMIZERS),
    HParam("lr", 0.1, "peak learning rate", low=0.0, high=10.0, low_open=True),
    HParam("momentum", 0.9, "momentum (sgd, rmsprop) or beta1 (adam, adamw)",
           low=0.0, high=1.0, high_open=True),
    HParam("nesterov", False, "Nesterov momentum (sgd only)", choices=(False, True)),
    HParam("weight_decay", 5e-4, "L2 penalty (decoupled for adamw)",
           low=0.0, high=1.0, high_open=True),
    HParam("schedule", "cosine", "learning-rate schedule over max_epochs", choices=SCHEDULES),
    HParam("warmup_epochs", 0, "linear warm-up from lr/10 before the schedule (not onecycle)",
           kind=int, low=0, high=1000),
    HParam("dropout", 0.0, "dropout probability before the classifier",
           low=0.0, high=1.0, high_open=True),
    HParam("mixup_alpha", 0.0, "Beta(alpha, alpha) of Mixup; 0 turns it off", low=0.0, high=100.0),
    HParam("label_smoothing", 0.0, "label-smoothing epsilon", low=0.0, high=1.0, high_open=True),
    HParam("prune_ratio", 0.0, "final fraction of conv and linear weights removed, reached gradually "
           "by 75 % of max_epochs", low=0.0, high=1.0, high_open=True),
    HParam("prune_method", "unstructured", "unstructured (zero the smallest weights) or channel "
           "(remove whole channels: a smaller, faster model)", choices=PRUNE_METHODS),
    HParam("activation", "relu", "activation function", choices=ACTIVATIONS),
    HParam("norm", "batch", "normalisation layer", choices=("batch", "none")),
    HParam("conv", "standard", "3x3 convolutions: standard, or depthwise + pointwise",
           choices=("standard", "separable")),
    HParam("width", 1.0, "channel-width multiplier (1.0 = 64 channels in the first stage)",
           low=0.0, high=8.0, low_open=True),
    HParam("init", "default", "weight initialisation", choices=("default", "kaiming", "xavier")),
    HParam("batch_size", 128, "images per optimizer step", kind=int, low=1, high=65536),
    HParam("seed", 0, "seed of weight init, augmentation and Mixup", kind=int, low=0, high=2**31 - 1),
    HParam("weights", None, "fine-tune from a state-dict file, a torchvision weights name "
           "(DEFAULT, IMAGENET1K_V1, ...) or 'imagenet' (core/finetune.py)", kind=str, optional=True),
    HParam("freeze", "none", "what fine-tuning freezes: none, or the backbone (only the "
           "classifier head trains)", choices=("none", "backbone")),
)

HPARAMS: dict[str, HParam] = {h.name: h for h in _TABLE}

# Test-only: a fault that the trainable raises on purpose (see trainables/faults.py).
FAULT_KEY = "_fault"


def defaults() -> dict[str, Any]:
    return {h.name: h.default for h in _TABLE}


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's full set of hyperparameters: `config` over the defaults, each value checked.

    Raises ValueError naming the first unknown or bad hyperparameter.
    """
    unknown = [k for k in config if k not in HPARAMS and k != FAULT_KEY]
    if unknown:
        raise ValueError(f"unknown hyperparameter {unknown[0]!r}{suggest(unknown[0], list(HPARAMS))}")
    full = defaults() | {k: v for k, v in config.items() if k != FAULT_KEY}
    for name, value in full.items():
        problem = HPARAMS[name].check(value)
        if problem:
            raise ValueError(f"{name}: {problem}")
    return {name: HPARAMS[name].take(value) for name, value in full.items()}
