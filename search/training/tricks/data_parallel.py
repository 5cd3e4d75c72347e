"""Data parallelism: one trial trains in N processes with PyTorch's
DistributedDataParallel, each on its share of every batch and all-reducing gradients (one
GPU per process with NCCL; on the CPU, N processes sharing the cores with Gloo).
``batch_size`` stays the global batch (each process takes ``batch_size / N``), so
``lr_scaling: linear`` keeps its meaning and a run on N processes steps as one process
would with that batch. The engine starts and times the processes
(``search/training/parallel.py``); a user's loop under ``torchrun`` calls the same
``shard`` and ``wrap`` (``examples/train_ddp.py``)."""

from __future__ import annotations

from typing import Any

from search.training.trick import Context, Field, Trick, number


def _validate(cfg: Any) -> None:
    n = cfg.data_parallel
    if n > 1 and cfg.batch_size % n:
        raise ValueError(f"data_parallel: batch_size {cfg.batch_size} does not split evenly "
                         f"into {n} processes, got {n}")
    if n > 1 and cfg.batch_size // n < 2 * cfg.accumulate:
        raise ValueError(f"data_parallel: each process needs at least 2 examples per "
                         f"(micro-)batch (batch_size {cfg.batch_size}, accumulate "
                         f"{cfg.accumulate}), got {n}")


def _check(cfg: Any, ctx: Context) -> None:
    if ctx.devices is not None and cfg.data_parallel > ctx.devices:
        raise ValueError(f"data_parallel: this worker has {ctx.devices} devices to train "
                         f"on, got {cfg.data_parallel}")


TRICK = Trick(
    "data_parallel", "Train one run in N processes (DistributedDataParallel), one share "
                     "of each batch each.",
    (Field("data_parallel", "int", 1, number(1, integer=True),
           "processes (GPUs) one run trains on, each with batch_size / N (1 = off)",
           sample="int", off=1, key=True),),
    order=37, validate=_validate, check=_check)
