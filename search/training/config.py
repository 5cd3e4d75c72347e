"""The training configuration: one frozen, validated dataclass, derived from the tricks.

Its fields are the ones the trick modules declare (``search/training/tricks/``), each
checked on construction. It is what the search samples, what ``search export`` writes
and what ``search.load_config`` returns. Its building blocks compose the tricks' roles
(``search/training/trick.py``); the engine trains with exactly these, so a user's own
PyTorch loop gets what the search measured:

    cfg.prepare(model)                         # freeze, memory format (before the optimizer)
    optimizer = cfg.build_optimizer(model)
    scheduler = cfg.build_scheduler(optimizer, steps_per_epoch)
    criterion, batch = cfg.build_criterion(), cfg.build_batch(num_classes)
    scaler, step_model = cfg.grad_scaler(device), cfg.step_model(model)
    before_step = cfg.build_before_step(optimizer, scaler)   # gradient clipping, or None
    with cfg.switches(device):
        for epoch in range(cfg.train_epochs):
            for x, y in batches:
                x, target = batch(x, y)        # augmentation, mixing, memory format
                for xs, ts, share in cfg.split(x, target):
                    with cfg.autocast(device):
                        loss = criterion(step_model(xs), ts) * share
                    scaler.scale(loss).backward()
                if before_step:
                    before_step()
                scaler.step(optimizer); scaler.update()
                optimizer.zero_grad(set_to_none=True); scheduler.step()
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from search.errors import UserError
from search.training import tricks
from search.training.trick import Context
from search.training.tricks import freezing, mixing
from search.training.tricks.freezing import as_groups, blocks_of

if TYPE_CHECKING:
    import torch

Batch = Callable[["torch.Tensor", "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]


class _Config:
    """The methods of :class:`TrainConfig` (its fields come from the tricks)."""

    def __post_init__(self) -> None:
        for name, field in tricks.FIELDS.items():
            value = getattr(self, name)
            try:
                coerced = field.check(value)
            except (TypeError, ValueError) as e:
                raise UserError(f"{name}: {e}, got {value!r}") from None
            object.__setattr__(self, name, coerced)
        for trick in tricks.playing("validate"):
            try:
                trick.validate(self)
            except ValueError as e:
                raise UserError(str(e)) from None

    # -- construction -------------------------------------------------------------------

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(tricks.FIELDS)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, source: str | None = None,
                     base: Any = None) -> Any:
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
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)

    @property
    def train_epochs(self) -> int:
        """How many epochs to train: ``stop_after`` (an exported point's epoch), else all
        ``epochs``. The lr schedule is laid out over ``epochs`` either way."""
        return self.stop_after or self.epochs

    @property
    def warm_epochs(self) -> int:
        """Leading epochs that hold one-time costs (compiling): not a fair judge of speed."""
        return max((t.warm_epochs(self) for t in tricks.playing("warm_epochs")), default=0)

    def records(self) -> dict[str, Any]:
        """What the tricks did in the run just trained (by trick name; only those that say)."""
        return {t.name: r for t in tricks.playing("record") if (r := t.record(self)) is not None}

    def stop(self, curve: list[dict[str, float]]) -> str | None:
        """After an epoch: a reason to end the run early (early stopping), or None."""
        for trick in tricks.playing("stop"):
            if reason := trick.stop(self, curve):
                return reason
        return None

    def check(self, ctx: Context) -> None:
        """Refuse values the model or data cannot take (one UserError naming the field)."""
        for trick in tricks.playing("check"):
            try:
                trick.check(self, ctx)
            except ValueError as e:
                raise UserError(str(e)) from None

    # -- building blocks for a plain PyTorch loop --------------------------------------

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for building the model (dropout, depth, width)."""
        out: dict[str, Any] = {}
        for trick in tricks.playing("model_kwargs"):
            out.update(trick.model_kwargs(self))
        return out

    def prepare(self, model: torch.nn.Module,
                blocks: Iterable[str | Iterable[str]] | None = None) -> torch.nn.Module:
        """Change ``model`` in place before the optimizer is built: freeze its first
        ``frozen_layers`` blocks, set its memory format. ``blocks`` is its ordered block
        list (module names, or groups of names); by default the model family's."""
        block_list = blocks_of(model) if blocks is None else as_groups(blocks)
        for trick in tricks.playing("prepare"):
            trick.prepare(self, model, block_list)
        return model

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The configured optimizer over the model's trainable parameters only (frozen
        ones are left out, so weight decay and momentum cannot move them)."""
        params = [p for p in model.parameters() if p.requires_grad]
        return tricks.the("optimizer").optimizer(self, params)

    def build_scheduler(self, optimizer: torch.optim.Optimizer,
                        steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
        """The lr schedule over ``epochs * steps_per_epoch`` steps; ``.step()`` once per batch."""
        return tricks.the("scheduler").scheduler(self, optimizer, self.epochs * steps_per_epoch)

    def build_criterion(self) -> torch.nn.Module:
        """The loss (cross-entropy with the configured label smoothing; takes soft targets)."""
        return tricks.the("criterion").criterion(self)

    def build_batch(self, num_classes: int) -> Batch:
        """A function (x, y) -> (x, target) for each training batch: augmentation, mixing
        (soft targets), memory format; the identity when all are off."""
        steps = [f for t in tricks.playing("batch") if (f := t.batch(self, num_classes))]
        inputs = self.inputs

        def batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            for step in steps:
                x, y = step(x, y)
            return inputs(x), y
        return batch

    def build_before_step(self, optimizer: torch.optim.Optimizer,
                          scaler: torch.amp.GradScaler) -> Callable[[], None] | None:
        """What to call between the backward passes and ``scaler.step`` (gradient
        clipping), or None when nothing is configured."""
        steps = [f for t in tricks.playing("before_step")
                 if (f := t.before_step(self, optimizer, scaler))]
        if not steps:
            return None

        def before_step() -> None:
            for step in steps:
                step()
        return before_step

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch as the model takes it (training and evaluation): memory format."""
        for trick in tricks.playing("inputs"):
            x = trick.inputs(self, x)
        return x

    def autocast(self, device: str | torch.device) -> Any:
        """The precision context for forward passes: ``with cfg.autocast(device): ...``."""
        return tricks.the("autocast").autocast(self, device)

    def grad_scaler(self, device: str | torch.device) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16 (bf16 and fp32 need no loss scaling)."""
        return tricks.the("grad_scaler").grad_scaler(self, device)

    def step_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls (``torch.compile``'d when configured)."""
        for trick in tricks.playing("step_model"):
            model = trick.step_model(self, model)
        return model

    @contextlib.contextmanager
    def switches(self, device: str | torch.device) -> Iterator[None]:
        """Process-wide settings for the run (TF32, cuDNN autotuning), restored on exit."""
        with contextlib.ExitStack() as stack:
            for trick in tricks.playing("switches"):
                stack.enter_context(trick.switches(self, device))
            yield

    def split(self, x: torch.Tensor, target: torch.Tensor
              ) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """The micro-batches of one batch, each with its share of the batch (scale its loss
        by it): one, the whole batch, unless gradients are accumulated."""
        k = 1
        for trick in tricks.playing("micro_batches"):
            k *= trick.micro_batches(self)
        if k == 1:
            return [(x, target, 1.0)]
        n = len(x)
        return [(xs, ts, len(xs) / n)
                for xs, ts in zip(x.tensor_split(k), target.tensor_split(k), strict=True)]


    # -- deprecated names (an earlier README's loop); each warns once, then works ----------

    def freeze(self, model: torch.nn.Module,
               blocks: Iterable[str | Iterable[str]] | None = None) -> list[str]:
        """Deprecated: use :meth:`prepare` (freezing and memory format). Freezes the first
        ``frozen_layers`` blocks only; returns the frozen module names, as it did."""
        _deprecated("cfg.freeze(model)", "cfg.prepare(model)")
        block_list = blocks_of(model) if blocks is None else as_groups(blocks)
        return freezing.freeze(model, block_list, self.frozen_layers)

    def build_mixer(self, num_classes: int) -> Batch:
        """Deprecated: use :meth:`build_batch` (augmentation, mixing, memory format). Mixup
        and cutmix only, as it was; the identity when both are off."""
        _deprecated("cfg.build_mixer(num_classes)", "cfg.build_batch(num_classes)")
        return mixing.build(num_classes, mixup_alpha=self.mixup_alpha,
                            cutmix_alpha=self.cutmix_alpha)

    def mix(self, x: torch.Tensor, y: torch.Tensor,
            num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Deprecated: use ``cfg.build_batch(num_classes)(x, y)``. Mixes one batch."""
        _deprecated("cfg.mix(x, y, num_classes)", "cfg.build_batch(num_classes)(x, y)")
        return mixing.build(num_classes, mixup_alpha=self.mixup_alpha,
                            cutmix_alpha=self.cutmix_alpha)(x, y)


_WARNED: set[str] = set()


def _deprecated(old: str, new: str) -> None:
    """Warn once per process that ``old`` is deprecated (a FutureWarning: users see it)."""
    if old not in _WARNED:
        _WARNED.add(old)
        warnings.warn(f"{old} is deprecated and will be removed in a later release; "
                      f"use {new}", FutureWarning, stacklevel=3)


TrainConfig = dataclasses.make_dataclass(
    "TrainConfig",
    [(f.name, f.type, dataclasses.field(default=f.default)) for f in tricks.FIELDS.values()],
    bases=(_Config,), frozen=True, kw_only=True)
TrainConfig.__module__ = __name__  # pickled and shown as search.training.config.TrainConfig
TrainConfig.__doc__ = ("A training recipe: the fields the tricks declare (``search tricks`` "
                       "lists them), checked on construction.")
