"""Early stopping: end a run whose validation accuracy stopped improving."""

from __future__ import annotations

from typing import Any

from search.training.trick import Field, Trick, number


def _stop(cfg: Any, curve: list[dict[str, float]]) -> str | None:
    """A reason to stop after the last epoch of ``curve``, or None."""
    if not cfg.patience or len(curve) >= cfg.train_epochs:
        return None
    accuracies = [point["accuracy"] for point in curve]
    best = accuracies.index(max(accuracies))  # the epoch that first reached the best
    if len(curve) - 1 - best < cfg.patience:
        return None
    return (f"no better validation accuracy for {cfg.patience} epochs "
            f"(best {accuracies[best]:.4f} at epoch {best + 1})")


TRICK = Trick(
    "early_stopping", "Stop a run whose validation accuracy stopped improving.",
    (Field("patience", "int", 0, number(0, integer=True),
           "stop after this many epochs without a better validation accuracy (0 = off)",
           sample="int", off=0),),
    order=32, stop=_stop)
