"""What a trick is: its config fields and the building blocks it contributes.

Every field of ``TrainConfig`` belongs to one trick, declared in its own module under
``search/training/tricks/`` as ``TRICK = Trick(...)``. A trick's roles are plain
functions of the config (Composer's "a method is a pure function"); ``TrainConfig``
composes them into the building blocks a training loop calls, and the engine calls only
those, so what a user imports is what the search measured. A role left ``None`` means the
trick takes no part in it.

Roles, in the order a loop meets them:

- ``check(cfg, ctx)``: refuse a value the model or data cannot take (``ctx`` is a
  :class:`Context`); raise ``ValueError`` with the reason. Run at recipe load on the
  baseline and on every value a space can sample, and again by the engine.
- ``model_kwargs(cfg)``: keyword arguments for building the model (dropout, depth, width).
- ``prepare(cfg, model, blocks)``: change the built model in place, before the optimizer
  is built (freezing, memory format); ``blocks`` is the model's ordered block list.
- ``optimizer(cfg, params)``, ``scheduler(cfg, optimizer, total_steps)``,
  ``criterion(cfg)``, ``autocast(cfg, device)``, ``grad_scaler(cfg, device)``: exactly
  one trick plays each of these.
- ``batch(cfg, num_classes)``: a training batch transform ``(x, y) -> (x, target)`` or
  None (augmentation, then mixing: tricks apply in registry order).
- ``inputs(cfg, x)``: every input batch, training and evaluation (memory format).
- ``step_model(cfg, model)``: the module the training step calls (``torch.compile``).
- ``switches(cfg, device)``: a context manager around the whole run for process-wide
  settings (TF32, cuDNN autotuning), restored on exit.
- ``before_step(cfg, optimizer, scaler)``: a function to call between the backward
  passes and the optimizer step (gradient clipping), or None.
- ``micro_batches(cfg)``: into how many micro-batches each batch is split, one backward
  each, one optimizer step per batch (gradient accumulation).
- ``stop(cfg, curve)``: after an epoch, a reason to end the run early (no better
  accuracy for a while), or None; ``curve`` holds one dict per epoch so far.
- ``record(cfg)``: what the trick did in a run, stored in ``TrainResult.tricks`` (what the
  compiler compiled), or None.
- ``warm_epochs(cfg)``: leading epochs that hold one-time costs (compiling); the pruner
  does not judge a trial on them.
- ``probes(cfg, choices)``: one-trick changes of the baseline worth measuring first,
  given the values the space can sample for each field.
- ``sampled(chosen, base)``: adjust a sampled combination (a new optimizer's own
  momentum and betas); ``check_space(dims, base)``: refuse a space whose combinations the
  config would refuse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# How a space may sample a field: a numeric range ("int" or "float"; choices and fixed
# values too), or only choices and fixed values ("choice").
SAMPLES = ("int", "float", "choice")


@dataclass(frozen=True)
class Field:
    """One ``TrainConfig`` field: its type, default, check and how the search treats it."""

    name: str
    type: str  # the annotation, as source text ("float", "int | None")
    default: Any
    check: Callable[[Any], Any]  # coerces a value or raises TypeError/ValueError
    help: str  # one line for the README's table and ``search tricks``
    sample: str = "choice"  # one of SAMPLES
    off: Any = None  # the value that turns the trick off (progress lines leave it out)
    key: bool = False  # shown in a trial's progress line
    max_blocks: bool = False  # a range's ``high: max`` means the model's block count
    # Optuna categoricals hold scalars: a value that is not one is encoded for the space.
    encode: Callable[[Any], Any] | None = None
    decode: Callable[[Any], Any] | None = None
    default_of: Callable[[Any], Any] | None = None  # what None means for a config

    def __post_init__(self) -> None:
        if self.sample not in SAMPLES:
            raise ValueError(f"sample must be one of {SAMPLES}, got {self.sample!r}")


@dataclass(frozen=True)
class Context:
    """What a config is checked against: the model and data of a recipe."""

    pretrained: bool = False  # the model has pretrained weights
    blocks: int | None = None  # the model's block count (the unit of frozen_layers, depth)
    model_kwargs: frozenset[str] | None = None  # build kwargs the model takes (None: all)
    images: bool = True  # the inputs are images (N, C, H, W)
    flip_invariant: bool = False  # the data's labels survive a horizontal flip
    devices: int | None = None  # devices the worker may train one run on (None: unknown)


@dataclass(frozen=True)
class Trick:
    """A trick: its fields and its roles (see the module docstring)."""

    name: str
    doc: str  # what it does, one sentence
    fields: tuple[Field, ...]
    order: int  # place in the config and in the batch pipeline
    check: Callable[[Any, Context], None] | None = None
    model_kwargs: Callable[[Any], dict[str, Any]] | None = None
    prepare: Callable[[Any, Any, list[list[str]]], None] | None = None
    optimizer: Callable[[Any, Any], Any] | None = None
    scheduler: Callable[[Any, Any, int], Any] | None = None
    criterion: Callable[[Any], Any] | None = None
    autocast: Callable[[Any, Any], Any] | None = None
    grad_scaler: Callable[[Any, Any], Any] | None = None
    batch: Callable[[Any, int], Any] | None = None
    inputs: Callable[[Any, Any], Any] | None = None
    step_model: Callable[[Any, Any], Any] | None = None
    switches: Callable[[Any, Any], Any] | None = None
    micro_batches: Callable[[Any], int] | None = None
    before_step: Callable[[Any, Any, Any], Callable[[], None] | None] | None = None
    warm_epochs: Callable[[Any], int] | None = None
    record: Callable[[Any], dict[str, Any] | None] | None = None
    stop: Callable[[Any, list[dict[str, float]]], str | None] | None = None
    probes: Callable[[Any, dict[str, tuple[Any, ...]]], list[dict[str, Any]]] | None = None
    sampled: Callable[[dict[str, Any], Any], None] | None = None
    check_space: Callable[[dict[str, Any], Any], None] | None = None
    validate: Callable[[Any], None] | None = None  # cross-field checks of one config


# -- field checks: each coerces a value or raises with what it must be ---------------------

def choice(options: Iterable[str]) -> Callable[[Any], str]:
    options = tuple(options)

    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return v
    return check


def number(low: float, high: float = math.inf, *, low_open: bool = False,
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


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("must be true or false")
    return v


def switch(name: str, doc: str, help_: str, order: int, **roles: Any) -> Trick:
    """A trick that is one on/off field of its own name (default off)."""
    return Trick(name, doc, (Field(name, "bool", False, boolean, help_, off=False),),
                 order, probes=lambda cfg, choices: _switch_on(name, cfg, choices), **roles)


def _switch_on(name: str, cfg: Any, choices: dict[str, tuple[Any, ...]]) -> list[dict]:
    return [{name: True}] if True in choices.get(name, ()) and not getattr(cfg, name) else []
