"""Studies: the plan a recipe makes, and creating, resuming or joining its study.

A study carries everything a worker needs in its user attributes (the recipe content,
the space text included, its hash, the budget), so ``search worker NAME`` on another
machine joins it with nothing but the storage URL. The budget counts finished (complete
or pruned) trials across all workers and runs; ``search/tuning/loop.py`` runs the trials.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna

from search.errors import UserError
from search.files import load_yaml
from search.tuning.floor import BASELINE_ATTR, Floor, of_recipe
from search.tuning.pruning import make_pruner, start_recording
from search.tuning.recipe import Recipe, baseline_config, baseline_parts
from search.tuning.storage import mask_url, open_storage

PROBE_ATTR = "probe"  # user attribute of an enqueued probe: the trick it applies



def make_sampler(name: str, seed: int, space: Any = None) -> optuna.samplers.BaseSampler:
    """The sampler named in a recipe. TPE is multivariate (grouped for conditional
    dimensions) with the constant liar, so parallel workers do not pile onto one point."""
    if name == "tpe":
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True, n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    raise UserError(f"sampler: unknown sampler, got {name!r}")


@dataclass(frozen=True)
class Plan:
    """What every worker of a study needs, rebuilt from the study's stored recipe."""

    name: str
    content: dict[str, Any]
    space: Any  # search.tuning.space.Space
    base: Any  # search.training.config.TrainConfig, the baseline
    data: Any  # search.training.data.DataSpec
    model: Any  # search.training.models.ModelSpec
    context: Any = None  # search.training.trick.Context: what configs are checked against
    trainer: Any = None  # a user's trainer function (recipe ``train:``), else the engine
    extras: dict[str, Any] = field(default_factory=dict)  # the baseline's trainer params

    @property
    def target_score(self) -> float | None:
        """A time-to-accuracy target as the study ranks it (a minimized metric's negated)."""
        target = self.content.get("target")
        return None if target is None else self.metric.score(target)

    @property
    def metric(self) -> Any:  # search.metric.Metric
        from search import metric

        return metric.of_recipe(self.content)

    @property
    def objective(self) -> str:
        return self.content["objective"]

    @property
    def floor(self) -> Floor:
        return of_recipe(self.content)

    def pruner(self) -> Any:
        """Our pruner for a pareto study (None: pruning off); None for time-to-accuracy,
        whose pruner Optuna holds (``optuna_pruner``)."""
        if self.objective != "pareto":
            return None
        return make_pruner(self.content["pruner"], self.floor)

    @classmethod
    def from_content(cls, content: dict[str, Any], *, source: str) -> Plan:
        """Validate a recipe's content: loads its data once to count the model's blocks
        (``frozen_layers: {high: max}``) and to fail on bad data before any storage."""
        from search.training import models
        from search.training.data import DataSpec
        from search.training.data import load as load_data
        from search.training.engine import context
        from search.training.models import ModelSpec
        from search.tuning import space as spaces

        if content.get("train"):
            return cls._of_trainer(content, source=source)
        section = dict(content["data"])
        if section.get("classes") is not None:
            section["classes"] = tuple(section["classes"])
        data, model = DataSpec(**section), ModelSpec(**content["model"])
        loaded = load_data(data)
        models.check_inputs(model, loaded.images, loaded.shape)
        built = models.build(model, in_channels=models.input_channels(model, loaded.channels),
                             num_classes=loaded.num_classes)  # weights exist and fit
        ctx = context(model, loaded, built)
        raw = _space_mapping(content, source)
        base = baseline_config(content["baseline"], content["epochs"], f"{source}: baseline")
        try:
            base.check(ctx)
        except UserError as e:
            raise e.within(f"{source}: baseline") from None
        space = (spaces.parse(raw, source=f"{source}: space", max_blocks=ctx.blocks, base=base)
                 if raw else spaces.Space(None, ()))
        space.check(base, ctx, source=f"{source}: space")
        if base.batch_size > loaded.train_size:
            raise UserError(f"baseline.batch_size: larger than the training set "
                            f"({loaded.train_size}), got {base.batch_size}", source=source)
        make_pruner(content["pruner"])
        return cls(content["name"], content, space, base, data, model, ctx)

    @classmethod
    def _of_trainer(cls, content: dict[str, Any], *, source: str) -> Plan:
        """A recipe whose ``train:`` names a user's trainer: no data or model to load; the
        space may hold the trainer's own params, and the baseline their trial-0 values."""
        from search.references import load_callable
        from search.tuning import space as spaces

        trainer = load_callable(content["train"], "train")
        fields, extras = baseline_parts(content["baseline"], True)
        base = baseline_config(fields, content["epochs"], f"{source}: baseline")
        raw = _space_mapping(content, source)
        space = (spaces.parse(raw, source=f"{source}: space", base=base, extras=True)
                 if raw else spaces.Space(None, ()))
        params = {d.name for d in space.dimensions if d.extra}
        for key in extras:
            if key not in params:
                raise UserError(f"baseline.{key}: neither a config field nor a param of the "
                                f"space, got {extras[key]!r}", source=source)
        make_pruner(content["pruner"])
        return cls(content["name"], content, space, base, None, None, None, trainer, extras)

    def sampler(self, name: str | None = None, seed: int | None = None
                ) -> optuna.samplers.BaseSampler:
        return make_sampler(name or self.content["sampler"],
                            self.content["seed"] if seed is None else seed, self.space)

    def optuna_pruner(self) -> optuna.pruners.BasePruner:
        """The pruner Optuna holds: its own for time-to-accuracy, none for pareto (ours
        runs inside the objective: Optuna refuses pruning multi-objective studies)."""
        if self.objective == "pareto":
            return optuna.pruners.NopPruner()
        return make_pruner(self.content["pruner"]) or optuna.pruners.NopPruner()


def _space_mapping(content: dict[str, Any], source: str) -> dict[str, Any] | None:
    """The recipe's stored space text as a mapping (None: the recipe has no space)."""
    text = content.get("space")
    raw = load_yaml(text) if text else None
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"space: expected a mapping, got a {type(raw).__name__}",
                        source=source)
    return raw


def plan_for(recipe: Recipe) -> Plan:
    """Validate everything a recipe names (data, model, space, pruner) before any storage
    is touched, so bad input never leaves a half-written study."""
    try:
        return Plan.from_content(recipe.content(), source=str(recipe.path))
    except UserError as e:
        raise (e if e.source else e.within(str(recipe.path))) from None


def open_study(recipe: Recipe, plan: Plan, *, storage: str | None = None,
               sampler: str | None = None, seed: int | None = None,
               trials: int | None = None, timeout: float | None = None) -> optuna.Study:
    """Create the recipe's study, or resume it if the same recipe already made it.

    A study of that name made from different recipe content is refused: results from
    two different searches must not mix. A new study runs the baseline first (trial 0).
    """
    url = storage or recipe.storage
    chosen_sampler = plan.sampler(sampler, seed)  # may refuse (grid): before the storage
    pruner = plan.optuna_pruner()
    store = open_storage(url)
    names = set(optuna.get_all_study_names(store))
    budget = {"trials": trials if trials is not None else recipe.trials,
              "timeout": timeout if timeout is not None else recipe.timeout}
    if recipe.name in names:
        study = optuna.load_study(study_name=recipe.name, storage=store,
                                  sampler=chosen_sampler, pruner=pruner)
        stored = study.user_attrs.get("recipe_hash")
        if stored != recipe.hash():
            raise UserError(f"study {recipe.name!r} in {mask_url(url)} was made from a "
                            f"different recipe (hash {stored}, now {recipe.hash()}); rename "
                            f"the study or use another storage", source=str(recipe.path))
        if trials is not None:
            study.set_user_attr("budget", budget)
        return study
    directions = ["maximize", "minimize"] if recipe.objective == "pareto" else ["minimize"]
    study = optuna.create_study(study_name=recipe.name, storage=store, directions=directions,
                                sampler=chosen_sampler, pruner=pruner)
    study.set_user_attr("recipe", plan.content)
    study.set_user_attr("recipe_hash", recipe.hash())
    study.set_user_attr("objective", recipe.objective)
    study.set_user_attr("target", recipe.target)
    study.set_user_attr("budget", budget)
    start_recording(study)
    enqueue_start(study, plan)
    return study


def enqueue_start(study: optuna.Study, plan: Plan) -> None:
    """Queue the study's first trials: the baseline (trial 0), then its probes (the
    baseline with one speed-up trick each, ``Space.probes``), labelled ``probe``."""
    study.enqueue_trial(plan.space.params_of(plan.base, plan.extras),
                        user_attrs={BASELINE_ATTR: True})
    if not plan.content.get("probes", True):
        return
    for label, params in plan.space.probes(plan.base, plan.context, plan.extras):
        study.enqueue_trial(params, user_attrs={PROBE_ATTR: label})


def attach(name: str, storage: str, *, sampler: str | None = None) -> tuple[optuna.Study, Plan]:
    """Join an existing study (``search worker``): its plan comes from the storage."""
    store = open_storage(storage, must_exist=True)
    names = set(optuna.get_all_study_names(store))
    if name not in names:
        raise UserError(f"no study named {name!r} in {mask_url(storage)} (create it with "
                        f"`search run RECIPE.yaml --storage ...` first)")
    study = optuna.load_study(study_name=name, storage=store)
    content = study.user_attrs.get("recipe")
    if not content:
        raise UserError(f"study {name!r} was not made by search (no recipe stored)")
    plan = Plan.from_content(content, source=f"study {name}")
    study = optuna.load_study(study_name=name, storage=store, sampler=plan.sampler(sampler),
                              pruner=plan.optuna_pruner())
    return study, plan
