"""The training configuration: one frozen, validated dataclass.

It is what the search samples, what `search export` writes and what `search.load_config`
returns. Its ``build_*`` methods are the building blocks the engine trains with, so a
user's own PyTorch loop gets exactly the optimizer, schedule, loss, batch mixing,
precision and freezing that the search measured.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search import optimizers
from search.errors import UserError

if TYPE_CHECKING:
    import torch

SCHEDULES = ("constant", "cosine", "onecycle")
PRECISIONS = ("fp32", "fp16", "bf16")
LR_SCALINGS = ("none", "linear")
LR_REFERENCE_BATCH = 256  # with lr_scaling=linear, `lr` is the rate per 256 examples (Goyal et al.)


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. Every field changes training; see README "Configuration"."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float | None = None  # sgd family only; None = the optimizer's default
    betas: tuple[float, float] | None = None  # adam family only; None = (0.9, 0.999)
    lr_schedule: str = "constant"
    warmup: float = 0.0  # fraction of all training steps spent warming up
    lr_scaling: str = "none"
    batch_size: int = 64
    epochs: int = 10  # the length the lr schedule is laid out for
    stop_after: int | None = None  # train only this many of the epochs (None: all of them)
    patience: int = 0  # stop after this many epochs without a new best accuracy; 0 = off
    frozen_layers: int = 0  # first k blocks of the pretrained backbone are frozen
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    dropout: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                coerced = _CHECKS[f.name](value)
            except (TypeError, ValueError) as e:
                raise UserError(f"{f.name}: {e}, got {value!r}") from None
            object.__setattr__(self, f.name, coerced)
        if self.stop_after is not None and self.stop_after > self.epochs:
            raise UserError(f"stop_after: must be at most epochs ({self.epochs}), "
                            f"got {self.stop_after!r}")
        spec = optimizers.spec(self.optimizer)
        if self.momentum is not None and not spec.takes_momentum:
            raise UserError(
                f"momentum: optimizer {self.optimizer!r} takes no momentum, got {self.momentum!r}"
            )
        if self.betas is not None and not spec.takes_betas:
            raise UserError(
                f"betas: optimizer {self.optimizer!r} takes no betas, got {list(self.betas)!r}"
            )

    # -- construction -------------------------------------------------------------------

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, source: str | None = None,
                     base: TrainConfig | None = None) -> TrainConfig:
        """Build from a mapping (YAML, ``--set``, Optuna params); unknown keys are errors."""
        names = cls.fields()
        for key in mapping:
            if key not in names:
                raise UserError(f"unknown key {key!r} (valid: {', '.join(names)})", source=source)
        try:
            return dataclasses.replace(base or cls(), **mapping)
        except UserError as e:
            raise e.within(source) if source else e from None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas) if self.betas is not None else None
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # -- derived values -----------------------------------------------------------------

    @property
    def train_epochs(self) -> int:
        """How many epochs to train: ``stop_after`` (an exported point's epoch), else all
        ``epochs``. The lr schedule is laid out over ``epochs`` either way."""
        return self.stop_after or self.epochs

    @property
    def effective_lr(self) -> float:
        """The lr the optimizer gets: scaled by batch_size/256 under linear scaling."""
        if self.lr_scaling == "linear":
            return self.lr * self.batch_size / LR_REFERENCE_BATCH
        return self.lr

    # -- building blocks for a plain PyTorch loop --------------------------------------

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The configured optimizer over the model's trainable parameters only.

        Frozen parameters (``requires_grad=False``) are left out, so weight decay and
        momentum cannot move them.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        return optimizers.build(self.optimizer, params, lr=self.effective_lr,
                                weight_decay=self.weight_decay, momentum=self.momentum,
                                betas=self.betas)

    def build_scheduler(self, optimizer: torch.optim.Optimizer,
                        steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
        """The lr schedule over ``epochs * steps_per_epoch`` steps; ``.step()`` once per batch."""
        from search import schedules

        return schedules.build(self.lr_schedule, optimizer, self.effective_lr,
                               total_steps=self.epochs * steps_per_epoch, warmup=self.warmup)

    def build_criterion(self) -> torch.nn.Module:
        """Cross-entropy with the configured label smoothing (accepts soft targets)."""
        import torch

        return torch.nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)

    def build_mixer(self, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor],
                                                        tuple[torch.Tensor, torch.Tensor]]:
        """A function (x, y) -> (mixed x, soft targets); the identity when both are off."""
        from search import mixing

        return mixing.build(num_classes, mixup_alpha=self.mixup_alpha,
                            cutmix_alpha=self.cutmix_alpha)

    def mix(self, x: torch.Tensor, y: torch.Tensor,
            num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix one batch (mixup/cutmix as configured). Build once with `build_mixer` in a loop."""
        return self.build_mixer(num_classes)(x, y)

    def autocast(self, device: str | torch.device) -> Any:
        """The precision context for forward passes: ``with cfg.autocast(device): ...``."""
        from search import precision

        return precision.autocast(self.precision, device)

    def grad_scaler(self, device: str | torch.device) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16 (bf16 and fp32 need no loss scaling)."""
        from search import precision

        return precision.grad_scaler(self.precision, device)

    def freeze(self, model: torch.nn.Module,
               blocks: Iterable[str | Iterable[str]] | None = None) -> list[str]:
        """Freeze the first ``frozen_layers`` blocks of ``model``; returns the frozen names.

        ``blocks`` is the model's ordered block list (module names, or groups of names);
        by default it is looked up from the model family (see ``search.models.blocks_of``).
        """
        from search import freezing, models

        block_list = models.blocks_of(model) if blocks is None else freezing.as_groups(blocks)
        return freezing.freeze(model, block_list, self.frozen_layers)


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return v
    return check


def _number(low: float, high: float = math.inf, *, low_open: bool = False,
            high_open: bool = False, integer: bool = False) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        kind = "an integer" if integer else "a number"
        if isinstance(v, bool) or not isinstance(v, (int, float) if not integer else int):
            if integer and isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise TypeError(f"must be {kind}")
        if not math.isfinite(v):
            raise ValueError(f"must be {kind}")
        too_low = v <= low if low_open else v < low
        too_high = v >= high if high_open else v > high
        if (too_low or too_high) and high == math.inf:
            raise ValueError(f"must be {'>' if low_open else '>='} {low:g}")
        if too_low or too_high:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            raise ValueError(f"must be in {left}{low:g}, {high:g}{right}")
        return int(v) if integer else float(v)
    return check


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("must be true or false")
    return v


def _betas(v: Any) -> tuple[float, float]:
    if isinstance(v, str) or not isinstance(v, Iterable):
        raise TypeError("must be a pair of numbers in [0, 1)")
    pair = tuple(v)
    if len(pair) != 2:
        raise ValueError("must be a pair of numbers in [0, 1)")
    beta = _number(0.0, 1.0, high_open=True)
    return (beta(pair[0]), beta(pair[1]))


def _optimizer(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("must be an optimizer name")
    optimizers.spec(v)
    return v


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "optimizer": _optimizer,
    "lr": _number(0.0, low_open=True),
    "weight_decay": _number(0.0),
    "momentum": _optional(_number(0.0, 1.0, high_open=True)),
    "betas": _optional(_betas),
    "lr_schedule": _choice(SCHEDULES),
    "warmup": _number(0.0, 1.0, high_open=True),
    "lr_scaling": _choice(LR_SCALINGS),
    "batch_size": _number(1, integer=True),
    "epochs": _number(1, integer=True),
    "stop_after": _optional(_number(1, integer=True)),
    "patience": _number(0, integer=True),
    "frozen_layers": _number(0, integer=True),
    "mixup_alpha": _number(0.0),
    "cutmix_alpha": _number(0.0),
    "label_smoothing": _number(0.0, 1.0, high_open=True),
    "precision": _choice(PRECISIONS),
    "channels_last": _bool,
    "compile": _bool,
    "dropout": _number(0.0, 1.0, high_open=True),
    "seed": _number(0, integer=True),
}
