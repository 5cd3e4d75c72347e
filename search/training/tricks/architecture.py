"""Network depth and width: how many of the model's blocks it uses, and how wide it is.

- ``depth``: the first k blocks (the unit ``frozen_layers`` counts). The built-in CNN is
  built with k convolution blocks (more than its default three on larger images); a
  pretrained backbone keeps its first k blocks, and its new head sits on the last of them
  (its later weights are never loaded or run); a user's model function gets ``depth=k``
  when it takes that argument.
- ``width``: channels of the first block (each later block doubles them), for the
  built-in CNN trained from scratch, or ``width=`` to a user's model function that takes
  it. A pretrained backbone's width is its checkpoint's.

``null`` (the default) leaves the model as the recipe names it.
"""

from __future__ import annotations

from typing import Any

from search.training.trick import Context, Field, Trick, number, optional


def _model_kwargs(cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in (("depth", cfg.depth), ("width", cfg.width)) if v is not None}


def _check(cfg: Any, ctx: Context) -> None:
    for name in ("depth", "width"):
        value = getattr(cfg, name)
        if value is not None and ctx.model_kwargs is not None and name not in ctx.model_kwargs:
            raise ValueError(f"{name}: the model takes no {name} argument, got {value}")
    if cfg.width is not None and ctx.pretrained:
        raise ValueError(f"width: a pretrained backbone's width is its checkpoint's, "
                         f"got {cfg.width}")
    if cfg.depth is not None and ctx.pretrained and ctx.blocks is not None \
            and cfg.depth > ctx.blocks:
        raise ValueError(f"depth: the pretrained model has {ctx.blocks} blocks, got {cfg.depth}")
    if cfg.depth is not None and cfg.depth < cfg.frozen_layers:
        raise ValueError(f"depth: must keep the {cfg.frozen_layers} frozen blocks, "
                         f"got {cfg.depth}")


TRICK = Trick(
    "architecture", "Network depth (blocks used) and width (channels).",
    (Field("depth", "int | None", None, optional(number(1, integer=True)),
           "use the model's first k blocks (`null`: all; `high: max`: the model's count)",
           sample="int", key=True, max_blocks=True),
     Field("width", "int | None", None, optional(number(1, integer=True)),
           "channels of the first block, built-in CNN or a model function taking `width`",
           sample="int", key=True)),
    order=45, model_kwargs=_model_kwargs, check=_check)
