"""PyTorch Lightning: search a ``LightningModule`` without rewriting it.

Needs the ``lightning`` extra (``pip install -e '.[lightning]'``). A trainer function for
a recipe's ``train:`` builds the module from the run and fits it with :func:`trainer`::

    def train(run):
        model = MyModule(lr=run.config.lr, hidden=run.params["hidden"])
        search.training.lightning.trainer(run, monitor="val_f1").fit(model, datamodule)

:func:`trainer` is a ``lightning.Trainer`` built from the config (its precision, gradient
accumulation and clipping, ``max_epochs = cfg.train_epochs``, the run's device) with a
:class:`Report` callback, which:

- times what a user pays for, each training epoch with its data loading, from
  ``on_train_epoch_start`` to ``on_train_epoch_end``, minus the validation loop that
  Lightning runs inside it (the run's stopwatch: synchronized at its edges on a GPU);
- reports the monitored metric after each validation (not the sanity check), where the
  study's pruner decides; a stopped run's ``Stop`` leaves ``fit`` as it would a trainer's.

The module's optimizer is its own (``configure_optimizers``); use ``run.config``'s
building blocks there (``build_optimizer``, ``build_scheduler``, ``build_criterion``) to
search them.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L  # noqa: N812 - Lightning's own convention

from search.training.run import Run

# TrainConfig.precision -> Lightning's precision plugin name.
PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


class Report(L.Callback):
    """Times a fit's training epochs on the run's stopwatch and reports ``monitor``."""

    def __init__(self, run: Run, monitor: str) -> None:
        self.run, self.monitor = run, monitor
        self._clock = run.timed()
        self._timing = False

    def _start(self) -> None:
        if not self._timing:
            self._clock.__enter__()
            self._timing = True

    def _pause(self) -> None:
        if self._timing:
            self._clock.__exit__(None, None, None)
            self._timing = False

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start()

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._pause()  # validation is not training time

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise KeyError(f"monitor {self.monitor!r} was not logged (logged: "
                           f"{', '.join(sorted(metrics)) or 'nothing'}): self.log it in "
                           f"validation_step")
        self.run.report(float(metrics[self.monitor]), trainer.current_epoch + 1)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._pause()

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self._start()  # back to training after a validation inside the epoch


def trainer(run: Run, *, monitor: str, **kwargs: Any) -> L.Trainer:
    """A ``lightning.Trainer`` for ``run``: the config's precision, accumulation and epochs,
    the run's device, and a :class:`Report` callback on ``monitor``. ``kwargs`` go to the
    Trainer (its own win over these, callbacks are added to)."""
    cfg = run.config
    device = run.device
    options: dict[str, Any] = {
        "max_epochs": cfg.train_epochs, "precision": PRECISION[cfg.precision],
        "accumulate_grad_batches": cfg.accumulate, "gradient_clip_val": cfg.clip_norm,
        "gradient_clip_algorithm": "norm",
        "accelerator": "gpu" if device.type == "cuda" else "cpu",
        "devices": [device.index or 0] if device.type == "cuda" else 1,
        "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "num_sanity_val_steps": 0,
    }
    callbacks = [Report(run, monitor), *kwargs.pop("callbacks", [])]
    # The study prints its own progress: Lightning's banners (devices, tips) are noise here.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning.pytorch.utilities._pytree")
    return L.Trainer(**{**options, **kwargs}, callbacks=callbacks)
