"""The optimizer registry: one entry per name, saying which class it is and what it takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
