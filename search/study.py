"""Studies: create or resume one from a recipe, and run trials to its budget."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from search.errors import UserError
from search.recipe import Recipe

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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


def make_pruner(spec: dict[str, Any]) -> Any:
    """Optuna's pruner for time-to-accuracy, our ParetoSuccessiveHalving for pareto."""
    from search.pruning import ParetoSuccessiveHalving

    options = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    try:
        if name == "pareto-sha":
            return ParetoSuccessiveHalving(**options)
        if name == "none":
            return optuna.pruners.NopPruner()
        if name == "median":
            return optuna.pruners.MedianPruner(**options)
        if name == "successive-halving":
            return optuna.pruners.SuccessiveHalvingPruner(**options)
        if name == "hyperband":
            return optuna.pruners.HyperbandPruner(**options)
        if name == "wilcoxon":
            return optuna.pruners.WilcoxonPruner(**options)
    except (TypeError, ValueError) as e:
        raise UserError(f"pruner: {e}, got {spec!r}") from None
    raise UserError(f"pruner: unknown pruner, got {name!r}")


def storage_for(url: str) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage for a SQLAlchemy URL; a bad or unreachable URL is a UserError."""
    from search.storage import open_storage

    return open_storage(url)


def open_study(recipe: Recipe, *, storage: str | None = None, sampler: str | None = None,
               seed: int | None = None, space: Any = None, create: bool = True) -> optuna.Study:
    """Create the recipe's study, or resume it if the same recipe already made it.

    A study of that name made from different recipe content is refused: results from
    two different searches must not mix.
    """
    url = storage or recipe.storage
    store = storage_for(url)
    seed = recipe.seed if seed is None else seed
    pruner = (optuna.pruners.NopPruner() if recipe.objective == "pareto"
              else make_pruner(recipe.pruner))
    directions = (["maximize", "minimize"] if recipe.objective == "pareto" else ["minimize"])
    names = {s.study_name for s in optuna.get_all_study_summaries(store)}
    if recipe.name in names:
        study = optuna.load_study(study_name=recipe.name, storage=store,
                                  sampler=make_sampler(sampler or recipe.sampler, seed, space),
                                  pruner=pruner)
        stored = study.user_attrs.get("recipe_hash")
        if stored != recipe.hash():
            raise UserError(f"study {recipe.name!r} in {mask(url)} was made from a different "
                            f"recipe (hash {stored}, now {recipe.hash()}); rename the study "
                            f"or use another storage", source=str(recipe.path))
        return study
    if not create:
        raise UserError(f"no study named {recipe.name!r} in {mask(url)}")
    study = optuna.create_study(study_name=recipe.name, storage=store, directions=directions,
                                sampler=make_sampler(sampler or recipe.sampler, seed, space),
                                pruner=pruner)
    study.set_user_attr("recipe", recipe.content())
    study.set_user_attr("recipe_hash", recipe.hash())
    study.set_user_attr("objective", recipe.objective)
    study.set_user_attr("target", recipe.target)
    return study


def mask(url: str) -> str:
    """The storage URL with any password replaced by ***."""
    from search.storage import mask_url

    return mask_url(url)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@dataclass
class RunSummary:
    study: optuna.Study
    ran: int
    seconds: float


def run(study: optuna.Study, objective: Callable[[optuna.trial.Trial], Any], *,
        trials: int | None, timeout: float | None,
        callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
        ) -> RunSummary:
    """Run trials until the study holds ``trials`` finished ones (across all workers and
    earlier runs) or ``timeout`` seconds pass."""
    start = time.perf_counter()
    before = finished_count(study)
    cbs = list(callbacks or [])
    if trials is not None:
        if before >= trials:
            return RunSummary(study, 0, 0.0)
        cbs.append(optuna.study.MaxTrialsCallback(trials, states=FINISHED))
    study.optimize(objective, n_trials=None if trials is None else trials - before,
                   timeout=timeout, callbacks=cbs, catch=(), gc_after_trial=True)
    return RunSummary(study, finished_count(study) - before, time.perf_counter() - start)


def optimize_recipe(recipe: Recipe, *, trials: int | None = None, timeout: float | None = None,
                    storage: str | None = None, device: str = "auto", seed: int | None = None,
                    sampler: str | None = None, progress: bool = True) -> RunSummary:
    """Run (or resume) the study of ``recipe``: the library behind ``search run``."""
    from search import models, space as spaces
    from search.config import TrainConfig
    from search.data import load as load_data
    from search.objective import Objective
    from search.progress import Progress
    from search.timing import resolve_device

    # Our bars (or nothing, with --quiet) replace Optuna's per-trial log lines.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data_spec, model_spec = recipe.data_spec(), recipe.model_spec()
    dev = resolve_device(device)
    data = load_data(data_spec)  # before the study is touched: bad data writes nothing
    blocks = models.count_blocks(model_spec, in_channels=data.channels,
                                 num_classes=data.num_classes)
    space = (spaces.load(recipe.space, max_blocks=blocks) if recipe.space
             else spaces.Space(None, ()))
    base = TrainConfig.from_mapping({"epochs": recipe.epochs, **recipe.baseline},
                                    source=f"{recipe.path}: baseline")
    study = open_study(recipe, storage=storage, sampler=sampler, seed=seed, space=space)
    if not study.trials:  # a new study: the baseline is trial 0, the reference point
        study.enqueue_trial(space.params_of(base))
    trials = trials if trials is not None else recipe.trials
    timeout = timeout if timeout is not None else recipe.timeout
    bar = Progress(total=trials, enabled=progress)
    bar.study_bar.update(min(finished_count(study), trials or 0))
    pruner = make_pruner(recipe.pruner) if recipe.objective == "pareto" else None
    objective = Objective(space=space, base=base, data=data, model=model_spec, device=dev,
                          objective=recipe.objective, target=recipe.target,
                          pruner=pruner if recipe.pruner["name"] != "none" else None,
                          on_epoch=bar.on_epoch)
    try:
        return run(study, objective, trials=trials, timeout=timeout, callbacks=[bar.on_trial])
    finally:
        bar.close()
