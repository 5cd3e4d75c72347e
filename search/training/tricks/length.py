"""The loop's length and batch: batch size, the epochs the schedule is laid out over, and
where to stop (an exported point's epoch)."""

from __future__ import annotations

from typing import Any

from search.training.trick import Field, Trick, number, optional


def _validate(cfg: Any) -> None:
    if cfg.stop_after is not None and cfg.stop_after > cfg.epochs:
        raise ValueError(f"stop_after: must be at most epochs ({cfg.epochs}), "
                         f"got {cfg.stop_after!r}")


def _probes(cfg: Any, choices: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """A bigger batch (the next one the space offers) and half the epochs."""
    out = []
    bigger = sorted(c for c in choices.get("batch_size", ()) if c > cfg.batch_size)
    if bigger:
        out.append({"batch_size": bigger[0]})
    if "epochs" in choices and cfg.epochs > 1:
        out.append({"epochs": max(1, cfg.epochs // 2)})
    return out


TRICK = Trick(
    "length", "Batch size and how long to train.",
    (Field("batch_size", "int", 64, number(1, integer=True),
           "examples per optimizer step", sample="int", key=True),
     Field("epochs", "int", 10, number(1, integer=True),
           "the length the lr schedule is laid out for", sample="int"),
     Field("stop_after", "int | None", None, optional(number(1, integer=True)),
           "train only this many of the `epochs` (an exported point's epoch; none = all)",
           sample="int")),
    order=30, validate=_validate, probes=_probes)
