"""Study recipes (``studies/*.yaml``): what to train on, what to search, how long.

A recipe names the study, its data and model, the search space file, the schedule
length, the objective, the budget, the sampler and pruner, the seed and the storage.
Its content hash (everything but the budget and the storage) is stored in the study,
so resuming a study with a different recipe under the same name is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search import metric as metrics
from search.errors import UserError
from search.files import expect_keys, read_mapping
from search.tuning import floor as floors

OBJECTIVES = ("pareto", "time-to-accuracy")
SAMPLERS = ("tpe", "nsga2", "random", "gp", "qmc", "grid")
PRUNERS = ("pareto-sha", "none", "median", "successive-halving", "hyperband", "wilcoxon")

_KEYS = {"name", "description", "data", "model", "space", "epochs", "objective", "target",
         "floor", "trials", "timeout", "sampler", "pruner", "seed", "storage", "baseline",
         "probes", "train", "metric"}
_DATA_KEYS = {"name", "classes", "data_dir", "download", "val_fraction", "test_fraction",
              "split_seed", "image_size", "size", "flip_invariant"}
_MODEL_KEYS = {"name", "weights", "width"}


@dataclass(frozen=True)
class Recipe:
    """A parsed, validated study recipe."""

    path: Path
    name: str
    data: dict[str, Any]
    model: dict[str, Any]
    space: Path | None
    epochs: int
    objective: str = "pareto"
    target: float | None = None
    trials: int | None = None
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "pareto-sha"})
    seed: int = 0
    storage: str = ""
    baseline: dict[str, Any] = field(default_factory=dict)
    probes: bool = True  # after the baseline, the baseline with one speed-up trick each
    description: str = ""
    floor: dict[str, float] | str = field(default_factory=lambda: dict(floors.DEFAULT))
    train: str | None = None  # module:function, a user's trainer (search/training/run.py)
    metric: dict[str, str] | None = None  # a trainer's metric (search/metric.py); None: accuracy

    def baseline_config(self):  # noqa: ANN201 - a TrainConfig, imported lazily (torch)
        """The baseline's TrainConfig: its fields over the recipe's schedule length."""
        fields, _ = baseline_parts(self.baseline, bool(self.train))
        return baseline_config(fields, self.epochs, f"{self.path}: baseline")

    def train_one(self, config: Any, *, device: str = "auto", callback: Any = None) -> Any:
        """Train ``config`` once on this recipe's task: with its data and model through the
        engine, or through its own trainer (``train:``, with the baseline's params)."""
        if not self.train:
            from search.training.engine import train

            return train(config, self.data_spec(), self.model_spec(), device=device,
                         callback=callback)
        from search.references import load_callable
        from search.training.run import run_trainer

        _, params = baseline_parts(self.baseline, True)
        return run_trainer(load_callable(self.train, "train"), config, device=device,
                           params=params, decide=callback,
                           metric=metrics.parse(self.metric, source=str(self.path)))

    def data_spec(self):  # noqa: ANN201 - search.training.data.DataSpec, imported lazily (torch)
        from search.training.data import DataSpec

        d = dict(self.data)
        if d.get("classes") is not None:
            d["classes"] = tuple(d["classes"])
        return DataSpec(**d)

    def model_spec(self):  # noqa: ANN201 - search.training.models.ModelSpec
        from search.training.models import ModelSpec

        return ModelSpec(**self.model)

    def content(self) -> dict[str, Any]:
        """What defines the study (the budget and the storage do not)."""
        space = self.space.read_text(encoding="utf-8") if self.space else None
        return {"name": self.name, "data": self.data, "model": self.model, "space": space,
                "epochs": self.epochs, "objective": self.objective, "target": self.target,
                "floor": self.floor, "sampler": self.sampler, "pruner": self.pruner,
                "seed": self.seed, "baseline": self.baseline, "probes": self.probes,
                **({"train": self.train} if self.train else {}),
                **({"metric": self.metric} if self.metric else {})}

    def hash(self) -> str:
        blob = json.dumps(self.content(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load(path: str | Path) -> Recipe:
    """Read and validate a recipe; every problem is one UserError naming file and key."""
    path = Path(path)
    raw = read_mapping(path)
    src = str(path)
    expect_keys(raw, _KEYS, src)

    def err(key: str, problem: str) -> UserError:
        return UserError(f"{key}: {problem}, got {raw.get(key)!r}", source=src)

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise err("name", "must be a non-empty string")
    train = raw.get("train")
    if train is not None:
        if not isinstance(train, str) or ":" not in train:
            raise err("train", "must name a trainer function as module:function")
        for key in ("data", "model"):
            if key in raw:
                raise UserError(f"{key}: a recipe with `train:` leaves data and model to its "
                                f"trainer ({train}); remove {key}", source=src)
    metric = metrics.parse(raw.get("metric"), source=src)
    if metric != metrics.ACCURACY and train is None:
        raise err("metric", "the built-in engine scores validation accuracy; a recipe "
                            "naming its own trainer (train:) names its own metric")
    data = _section(raw, "data", _DATA_KEYS, src, default={"name": "digits"})
    model = _section(raw, "model", _MODEL_KEYS, src, default={"name": "cnn"})
    _check_values(data, _DATA_CHECKS, "data", src)
    _check_values(model, _MODEL_CHECKS, "model", src)
    epochs = raw.get("epochs", 10)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise err("epochs", "must be an integer >= 1")
    objective = raw.get("objective", "pareto")
    if objective not in OBJECTIVES:
        raise err("objective", f"must be one of {', '.join(OBJECTIVES)}")
    target = raw.get("target")
    if objective == "time-to-accuracy":
        if metric == metrics.ACCURACY and (not _is_number(target) or not 0 < target <= 1):
            raise err("target", "time-to-accuracy needs a target accuracy in (0, 1]")
        if not _is_number(target) or target != target or abs(target) == float("inf"):
            raise err("target", f"time-to-accuracy needs a target {metric.name} (a number)")
    elif target is not None:
        raise err("target", "only the time-to-accuracy objective takes a target")
    floor = floors.parse(raw.get("floor"), source=src).to_mapping() or "none"
    trials = raw.get("trials")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int)
                               or trials < 1):
        raise err("trials", "must be an integer >= 1")
    timeout = raw.get("timeout")
    if timeout is not None and (not _is_number(timeout) or timeout <= 0):
        raise err("timeout", "must be a number of seconds > 0")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise err("sampler", f"unknown sampler (valid: {', '.join(SAMPLERS)})")
    pruner = raw.get("pruner", "pareto-sha" if objective == "pareto" else "median")
    pruner = {"name": pruner} if isinstance(pruner, str) else pruner
    if not isinstance(pruner, dict) or pruner.get("name") not in PRUNERS:
        raise err("pruner", f"unknown pruner (valid: {', '.join(PRUNERS)})")
    if objective == "pareto" and pruner["name"] not in ("pareto-sha", "none"):
        raise err("pruner", "a pareto study takes pareto-sha or none (Optuna's pruners are "
                            "single-objective)")
    if objective == "time-to-accuracy" and pruner["name"] == "pareto-sha":
        raise err("pruner", "pareto-sha is for pareto studies; use median, "
                            "successive-halving, hyperband, wilcoxon or none")
    from search.tuning.pruning import make_pruner

    try:
        make_pruner(pruner)
    except UserError as e:
        raise e.within(src) from None
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise err("seed", "must be an integer >= 0")
    probes = raw.get("probes", True)
    if not isinstance(probes, bool):
        raise err("probes", "must be true or false")
    space = raw.get("space")
    space_path = None
    if space is not None:
        if not isinstance(space, str):
            raise err("space", "must be a path to a space file")
        space_path = (path.parent / space).resolve()
        if not space_path.is_file():
            kind = "is a directory" if space_path.is_dir() else "file not found"
            raise UserError(f"space: {kind}: {space_path}", source=src)
        read_mapping(space_path)  # empty, not YAML, not UTF-8, not a mapping: one line
    storage = raw.get("storage") or f"sqlite:///{path.parent / (name + '.db')}"
    if not isinstance(storage, str) or "://" not in storage:
        raise err("storage", "must be a storage URL (sqlite:///..., journal:///... or "
                             "postgresql://...)")
    baseline = raw.get("baseline") or {}
    if not isinstance(baseline, dict):
        raise err("baseline", "must be a mapping of training configuration fields")
    baseline_config(baseline_parts(baseline, train is not None)[0], epochs, f"{src}: baseline")
    description = raw.get("description", "")
    return Recipe(path=path, name=name, data=data, model=model, space=space_path,
                  epochs=epochs, objective=objective, target=target, trials=trials,
                  timeout=timeout, sampler=sampler, pruner=pruner, seed=seed, storage=storage,
                  baseline=baseline, description=str(description), floor=floor,
                  probes=probes, train=train,
                  metric=metric.to_mapping() if metric != metrics.ACCURACY else None)


def _section(raw: dict[str, Any], key: str, allowed: set[str], src: str,
             default: dict[str, Any]) -> dict[str, Any]:
    value = raw.get(key, default)
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise UserError(f"{key}: must be a mapping or a name, got {value!r}", source=src)
    for k in value:
        if k not in allowed:
            raise UserError(f"{key}.{k}: unknown key (valid: {', '.join(sorted(allowed))})",
                            source=src)
    return dict(value)


def _int_at_least(low: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


_DATA_CHECKS = {
    "name": (_is_str, "must be a data set name"),
    "classes": (lambda v: v is None or (isinstance(v, list) and bool(v) and all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in v)),
        "must be a list of class labels (integers >= 0)"),
    "data_dir": (_is_str, "must be a directory path"),
    "download": (lambda v: isinstance(v, bool), "must be true or false"),
    "val_fraction": (lambda v: _is_number(v) and 0 < v < 1, "must be a number in (0, 1)"),
    "test_fraction": (lambda v: _is_number(v) and 0 <= v < 1, "must be a number in [0, 1)"),
    "split_seed": (_int_at_least(0), "must be an integer >= 0"),
    "image_size": (lambda v: v is None or _int_at_least(1)(v), "must be an integer >= 1"),
    "size": (_int_at_least(1), "must be an integer >= 1"),
    "flip_invariant": (lambda v: isinstance(v, bool), "must be true or false"),
}
_MODEL_CHECKS = {
    "name": (_is_str, "must be a model name"),
    "weights": (lambda v: v is None or _is_str(v), "must be a checkpoint path or weight name"),
    "width": (_int_at_least(1), "must be an integer >= 1"),
}


def _check_values(section: dict[str, Any], checks: dict[str, Any], key: str, src: str) -> None:
    for k, (ok, problem) in checks.items():
        if k in section and not ok(section[k]):
            raise UserError(f"{key}.{k}: {problem}, got {section[k]!r}", source=src)
    if "name" not in section:
        raise UserError(f"{key}.name: missing", source=src)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def baseline_config(baseline: dict[str, Any], epochs: int, source: str) -> Any:
    """The baseline's TrainConfig: its fields over the recipe's schedule length."""
    from search.training.config import TrainConfig

    return TrainConfig.from_mapping({"epochs": epochs, **baseline}, source=source)


def baseline_parts(baseline: dict[str, Any], trainer: bool
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A baseline's config fields and its trainer params: for a recipe naming its own
    trainer, the keys that are not config fields (the space's own dimensions); for the
    engine, none (an unknown key is then the config's error)."""
    if not trainer:
        return baseline, {}
    from search.training.config import TrainConfig

    fields = TrainConfig.fields()
    return ({k: v for k, v in baseline.items() if k in fields},
            {k: v for k, v in baseline.items() if k not in fields})
