"""The optimizer: which ``torch.optim`` class, its learning rate, weight decay, momentum or
betas, and the lr's scaling with the batch size.

The registry is data (as timm's): one entry per name, saying which class it is and what
it takes. The optimizer is built over the trainable parameters only, so frozen ones
cannot move through weight decay or momentum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from search.training.trick import Field, Trick, choice, number, optional

LR_SCALINGS = ("none", "linear")
LR_REFERENCE_BATCH = 256  # with lr_scaling=linear, `lr` is the rate per 256 examples (Goyal et al.)


@dataclass(frozen=True)
class OptimizerSpec:
    """How a configured optimizer name becomes a ``torch.optim`` optimizer."""

    cls: str  # attribute of torch.optim, looked up when built (keeps torch out of imports)
    takes_momentum: bool = False
    takes_betas: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)  # fixed kwargs for this name
    momentum: float = 0.0  # momentum used when the config leaves it unset
    betas: tuple[float, float] = (0.9, 0.999)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec("SGD"),  # plain mini-batch SGD: no momentum
    "momentum": OptimizerSpec("SGD", takes_momentum=True, momentum=0.9),
    "nesterov": OptimizerSpec(
        "SGD", takes_momentum=True, momentum=0.9, defaults={"nesterov": True}
    ),
    "rmsprop": OptimizerSpec("RMSprop", takes_momentum=True, momentum=0.0),
    "adagrad": OptimizerSpec("Adagrad"),
    "adam": OptimizerSpec("Adam", takes_betas=True),
    "adamw": OptimizerSpec("AdamW", takes_betas=True),
}


def spec(name: str) -> OptimizerSpec:
    """The registry entry for ``name``; unknown names fail with the valid ones."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer (valid: {', '.join(OPTIMIZERS)})") from None


def build(name: str, params: Any, *, lr: float, weight_decay: float,
          momentum: float | None, betas: tuple[float, float] | None) -> Any:
    """Build the optimizer over ``params`` (parameters or param groups)."""
    import torch

    entry = spec(name)
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay, **entry.defaults}
    if entry.takes_momentum:
        kwargs["momentum"] = entry.momentum if momentum is None else momentum
    if entry.takes_betas:
        kwargs["betas"] = entry.betas if betas is None else tuple(betas)
    return getattr(torch.optim, entry.cls)(params, **kwargs)


def effective_lr(cfg: Any) -> float:
    """The lr the optimizer gets: scaled by batch_size/256 under linear scaling."""
    if cfg.lr_scaling == "linear":
        return cfg.lr * cfg.batch_size / LR_REFERENCE_BATCH
    return cfg.lr


def _build(cfg: Any, params: Any) -> Any:
    return build(cfg.optimizer, params, lr=effective_lr(cfg), weight_decay=cfg.weight_decay,
                 momentum=cfg.momentum, betas=cfg.betas)


def _validate(cfg: Any) -> None:
    entry = spec(cfg.optimizer)
    if cfg.momentum is not None and not entry.takes_momentum:
        raise ValueError(f"momentum: optimizer {cfg.optimizer!r} takes no momentum, "
                         f"got {cfg.momentum!r}")
    if cfg.betas is not None and not entry.takes_betas:
        raise ValueError(f"betas: optimizer {cfg.optimizer!r} takes no betas, "
                         f"got {list(cfg.betas)!r}")


def _sampled(chosen: dict[str, Any], base: Any) -> None:
    """Another optimizer than the baseline's: its momentum and betas are its own default
    unless sampled (a momentum baseline's 0.9 means nothing to adam or rmsprop)."""
    if chosen.get("optimizer", base.optimizer) != base.optimizer:
        chosen.setdefault("momentum", None)
        chosen.setdefault("betas", None)


def _check_space(dims: dict[str, Any], base: Any) -> None:
    """``momentum`` / ``betas`` may only be searched where every optimizer that can be
    chosen takes them (a ``when: {optimizer: [...]}`` condition makes that so)."""
    optimizer = dims.get("optimizer")
    possible = set(optimizer.choices or [optimizer.value]) if optimizer else {base.optimizer}
    for name, takes in (("momentum", "takes_momentum"), ("betas", "takes_betas")):
        dim = dims.get(name)
        if dim is None or dim.kind == "fixed" and dim.value is None:
            continue
        allowed = dict(dim.when).get("optimizer", tuple(possible))
        refusing = sorted(o for o in possible & set(allowed) if not getattr(spec(o), takes))
        if refusing:
            raise ValueError(f"{name}: optimizer {', '.join(refusing)} takes no {name}; add "
                             f"when: {{optimizer: [...]}} naming those that do, got {name} "
                             f"for {', '.join(sorted(possible & set(allowed)))}")


def _name(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("must be an optimizer name")
    spec(v)
    return v


def _betas(v: Any) -> tuple[float, float]:
    if isinstance(v, str) or not isinstance(v, Iterable):
        raise TypeError("must be a pair of numbers in [0, 1)")
    pair = tuple(v)
    if len(pair) != 2:
        raise ValueError("must be a pair of numbers in [0, 1)")
    beta = number(0.0, 1.0, high_open=True)
    return (beta(pair[0]), beta(pair[1]))


def _decode_betas(v: Any) -> tuple[float, float]:
    """A pair as a space's categorical holds it ("0.9,0.999": Optuna's are scalars)."""
    return _betas(tuple(float(b) for b in v.split(",")) if isinstance(v, str) else v)


TRICK = Trick(
    "optimizer", "The optimizer, its learning rate and weight decay.",
    (Field("optimizer", "str", "adam", _name,
           f"`{'`, `'.join(OPTIMIZERS)}` (`sgd` is plain SGD)", key=True),
     Field("lr", "float", 1e-3, number(0.0, low_open=True), "learning rate", sample="float",
           key=True),
     Field("weight_decay", "float", 0.0, number(0.0),
           "decoupled or L2 weight decay, as the optimizer defines it", sample="float",
           off=0.0),
     Field("momentum", "float | None", None, optional(number(0.0, 1.0, high_open=True)),
           "SGD family and RMSprop only (`null`: the optimizer's default)", sample="float",
           default_of=lambda cfg: spec(cfg.optimizer).momentum),
     Field("betas", "tuple[float, float] | None", None, optional(_betas),
           "Adam family only (`null`: (0.9, 0.999))",
           encode=lambda pair: ",".join(str(float(b)) for b in pair), decode=_decode_betas,
           default_of=lambda cfg: spec(cfg.optimizer).betas),
     Field("lr_scaling", "str", "none", choice(LR_SCALINGS),
           "`linear`: `lr` is per 256 examples, scaled by `batch_size/256` (Goyal et al.)")),
    order=10, optimizer=_build, validate=_validate, sampled=_sampled,
    check_space=_check_space)
