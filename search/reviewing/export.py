"""Exported configurations: the file `search export` writes and ``load_config`` reads.

The file is self-describing: the full training configuration (``params``: ``epochs`` is
the schedule's length and ``stop_after`` the epoch the measured point is at, so training
``cfg.train_epochs`` epochs reproduces it), what was measured (validation accuracy, the
selection metric, and test accuracy, which the search never saw) and on which device,
the data and model it was measured on, and where it came from (study, trial, version).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search import metric as metrics
from search.errors import UserError
from search.files import read_mapping
from search.reviewing.choose import measured
from search.training.config import TrainConfig

FORMAT = "search/config-v2"  # v2: params.stop_after, measured val_ and test_accuracy
V1 = "search/config-v1"  # still read: its reproduce.stop_after_epochs becomes stop_after


def measured_config(trial: Any) -> TrainConfig:
    """A finished trial's config, set to stop where its point was measured: the end of its
    best epoch (``stop_after``), with the schedule laid out over its ``epochs``."""
    return TrainConfig.from_mapping(measured(trial))


def export_record(study_name: str, trial: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    """The exported mapping for a finished trial (an Optuna FrozenTrial)."""
    from search import __version__

    result = trial.user_attrs.get("result", {})
    config = measured_config(trial)
    metric = metrics.of_recipe(recipe)
    return {
        "format": FORMAT,
        # `epochs` is the schedule's length, `stop_after` the epoch the point was measured at.
        "params": config.to_dict(),
        "measured": {  # *_accuracy: the study's metric, under its name in `metric`
            "metric": metric.name,
            "val_accuracy": metric.value(result.get("accuracy")),
            "test_accuracy": metric.value(result.get("test_accuracy")),
            "seconds": result.get("seconds"),
            "final_accuracy": metric.value(result.get("final_accuracy")),
            "train_seconds": result.get("train_seconds"),
            "epochs_run": result.get("epochs_run"),
            "samples_per_second": result.get("samples_per_second"),
            "flops_per_sample": result.get("flops_per_sample"),
            "outcome": trial.user_attrs.get("outcome"),
        },
        "device": result.get("device", {}),
        "data": recipe.get("data"),
        "model": recipe.get("model"),
        "study": study_name,
        "trial": trial.number,
        "tool": {"name": "search", "version": __version__},
    }


def write(record: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Exported by `search export`; load with search.load_config(path).\n"
    text += yaml.safe_dump(record, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def load_config(path: str | Path) -> TrainConfig:
    """The typed training configuration of an exported file (or a plain mapping of fields).

    The result has the building blocks for a plain PyTorch loop: ``model_kwargs``,
    ``prepare``, ``build_optimizer``, ``build_scheduler``, ``build_criterion``,
    ``build_batch``, ``split``, ``autocast``, ``grad_scaler``, ``step_model`` and
    ``switches`` (see README "Reusing a config").
    """
    raw = read_mapping(path)
    if "format" in raw:
        if raw["format"] not in (FORMAT, V1):
            raise UserError(f"format: not a search export ({FORMAT}), got {raw['format']!r}",
                            source=str(path))
        params = raw.get("params")
        if not isinstance(params, dict):
            raise UserError(f"params: must be a mapping, got {params!r}", source=str(path))
        stop = (raw.get("reproduce") or {}).get("stop_after_epochs")
        if raw["format"] == V1 and stop:
            params = {**params, "stop_after": stop}
        return TrainConfig.from_mapping(params, source=f"{path}: params")
    return TrainConfig.from_mapping(raw, source=str(path))
