"""Gradient accumulation: each batch is split into micro-batches, one forward and backward
each, and the optimizer steps once per batch: the optimization of ``batch_size`` in the
activation memory of ``batch_size / accumulate`` (BatchNorm sees the micro-batches)."""

from __future__ import annotations

from typing import Any

from search.training.trick import Field, Trick, number


def _validate(cfg: Any) -> None:
    if cfg.accumulate > 1 and cfg.batch_size < 2 * cfg.accumulate:
        raise ValueError(f"accumulate: each micro-batch needs at least 2 examples "
                         f"(batch_size {cfg.batch_size}), got {cfg.accumulate}")


TRICK = Trick(
    "accumulation", "Split each batch into micro-batches; one optimizer step per batch.",
    (Field("accumulate", "int", 1, number(1, integer=True),
           "micro-batches per optimizer step (gradient accumulation; 1 = off)",
           sample="int", off=1, key=True),),
    order=35, validate=_validate, micro_batches=lambda cfg: cfg.accumulate)
