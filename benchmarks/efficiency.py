"""The search's efficiency: hypervolume of the front against training seconds spent.

Three strategies search the default study's task and space (digits 5-9, the built-in CNN
pretrained on digits 0-4, ``spaces/default.yaml``) with the same budget of training
seconds, for each of several seeds, interleaved (a, b, c, a, b, c, ...) in one process:

(a) the tool's default: multivariate TPE plus our Pareto successive-halving pruner, with
    the baseline enqueued as the first trial (as ``search run`` does);
(b) plain Optuna NSGA-II (population 20), no pruning;
(c) random search, no pruning.

The budget is training seconds (the engine's timed region, summed over all trials,
pruned ones included): a strategy stops starting trials once it has spent it. The
hypervolume of its (accuracy, seconds) front is measured against one fixed reference
point per run of this script: accuracy 0.8 and twice the baseline config's training
seconds, measured at the start (a point counts only if it beats 80% accuracy and is
faster than twice the baseline). For each seed, the budget (a) and (b) need to reach
the hypervolume (c) reaches with its full budget is reported as a fraction of that
budget; the last line is ``budget_ratio_vs_random: X``, the median of (a)'s fractions
(``inf`` where (a) never reached it; a seed where random found nothing inside the
reference point says nothing and is left out).

Also: the time-to-accuracy objective (target 0.98) with the median pruner against no
pruning, same seeds and budget: the best time to accuracy found and the trials run.

    .venv/bin/python benchmarks/efficiency.py --quick
"""

from __future__ import annotations

import math
from typing import Any

import optuna

if __package__:
    from benchmarks import common
else:
    import common  # type: ignore[no-redef]

from search import frontier
from search import recipe as recipes
from search.objective import Objective
from search.study import Plan, make_pruner, make_sampler

RECIPE = "studies/digits.yaml"
STRATEGIES = {"a: tpe + pareto-sha": ("tpe", True), "b: nsga2": ("nsga2", False),
              "c: random": ("random", False)}
ACCURACY_REFERENCE = 0.8
TTA_TARGET = 0.98


def spent(study: optuna.Study) -> float:
    return sum(frontier.spent_seconds(t) for t in study.get_trials(deepcopy=False))


def search(plan: Plan, data: Any, dev: Any, *, sampler: str, prune: bool, seed: int,
           budget: float, objective: str = "pareto", pruner: dict | None = None
           ) -> optuna.Study:
    """One in-memory study of the plan's space, stopped once ``budget`` seconds are spent."""
    pareto = objective == "pareto"
    study = optuna.create_study(
        directions=["maximize", "minimize"] if pareto else ["minimize"],
        sampler=make_sampler(sampler, seed, plan.space),
        pruner=make_pruner(pruner) if (pruner and not pareto) else optuna.pruners.NopPruner())
    if prune and pareto:
        study.enqueue_trial(plan.space.params_of(plan.base))
    obj = Objective(space=plan.space, base=plan.base, data=data, model=plan.model, device=dev,
                    objective=objective, target=TTA_TARGET if not pareto else None,
                    pruner=make_pruner(plan.content["pruner"]) if (prune and pareto) else None)

    def stop(study: optuna.Study, _trial: Any) -> None:
        if spent(study) >= budget:
            study.stop()

    study.optimize(obj, callbacks=[stop], gc_after_trial=True)
    return study


def budget_to_reach(history: list[tuple[int, float, float]], target: float) -> float:
    """Training seconds spent when the hypervolume first reached ``target`` (inf: never;
    nan for a target of 0: random found nothing inside the reference point, and any
    strategy "reaches" that at once, so the seed says nothing and is left out)."""
    if target <= 0:
        return math.nan
    return next((sec for _, sec, hv in history if hv >= target - 1e-12), math.inf)


def _median_ratio(ratios: list[float]) -> float:
    """The median over the seeds that say something (nan: none did); inf counts (never
    reached)."""
    kept = [x for x in ratios if not math.isnan(x)]
    return common.median(kept) if kept else math.nan


def within(history: list[tuple[int, float, float]], budget: float
           ) -> list[tuple[int, float, float]]:
    """The history up to the budget: the trial that overran it does not count."""
    return [h for h in history if h[1] <= budget]


def main(argv: list[str] | None = None) -> int:
    p = common.parser("efficiency", __doc__.splitlines()[0])
    p.add_argument("--seeds", type=common.positive_int, default=None,
                   help="seeds per strategy (default 1 with --quick, else 3)")
    p.add_argument("--budget", type=float, default=None,
                   help="training seconds per search (default 15 with --quick, else 60)")
    args = p.parse_args(argv)
    budget = args.budget or (15.0 if args.quick else 60.0)
    args.seeds = args.seeds or (1 if args.quick else 3)
    common.apply_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dev = args.device

    rec = recipes.load(RECIPE)
    plan = Plan.from_content(rec.content(), source=RECIPE)
    from search.data import load as load_data
    from search.engine import train

    data = load_data(plan.data)
    baseline = train(plan.base, data, plan.model, device=dev)
    reference = (ACCURACY_REFERENCE, 2 * baseline.seconds)
    print(f"efficiency on {dev}: {args.seeds} seeds x {len(STRATEGIES)} strategies, "
          f"{budget:g} training seconds each; reference point (accuracy "
          f"{reference[0]}, {reference[1]:.2f} s = 2 x baseline)", flush=True)
    note = common.busy_note()
    if note:
        print(note, flush=True)

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in STRATEGIES}
    for seed in range(args.seeds):
        for name, (sampler, prune) in STRATEGIES.items():
            study = search(plan, data, dev, sampler=sampler, prune=prune, seed=seed,
                           budget=budget)
            history = within(frontier.hypervolume_history(study.trials, reference), budget)
            states = [t.state for t in study.trials]
            runs[name].append({
                "seed": seed, "history": history,
                "hypervolume": history[-1][2] if history else 0.0,
                "spent": spent(study), "trials": len(study.trials),
                "pruned": states.count(optuna.trial.TrialState.PRUNED)})
            print(f"  seed {seed} {name}: {len(study.trials)} trials "
                  f"({runs[name][-1]['pruned']} pruned), hypervolume "
                  f"{runs[name][-1]['hypervolume']:.4f}", flush=True)

    random_runs = runs["c: random"]
    rows, ratios = [], {name: [] for name in STRATEGIES}
    for name, results in runs.items():
        for r, rnd in zip(results, random_runs, strict=True):
            need = budget_to_reach(r["history"], rnd["hypervolume"])
            ratios[name].append(need / budget)
        rows.append([name, common.median([r["trials"] for r in results]),
                     common.median([r["pruned"] for r in results]),
                     common.median([r["hypervolume"] for r in results]),
                     _median_ratio(ratios[name])])
    common.print_table(["strategy", "trials", "pruned", "hypervolume",
                        "budget to reach random's"], rows)

    tta = []
    for seed in range(max(1, args.seeds if not args.quick else 1)):
        for label, pruner in (("median pruner", {"name": "median", "n_startup_trials": 3}),
                              ("no pruning", {"name": "none"})):
            study = search(plan, data, dev, sampler="tpe", prune=pruner["name"] != "none",
                           seed=seed, budget=budget, objective="time-to-accuracy",
                           pruner=pruner)
            done = [t.values[0] for t in study.trials
                    if t.state == optuna.trial.TrialState.COMPLETE]
            tta.append({"seed": seed, "pruner": label, "trials": len(study.trials),
                        "reached": len(done), "best_seconds": min(done, default=math.inf)})
    common.print_table(["seed", "time-to-accuracy", "trials", "reached target",
                        "best seconds"],
                       [[t["seed"], t["pruner"], t["trials"], t["reached"], t["best_seconds"]]
                        for t in tta])

    plot = write_plot(runs, args.out.with_suffix(".html"))
    out = common.write_json(args.out, {
        "benchmark": "efficiency", "budget_seconds": budget, "seeds": args.seeds,
        "reference": reference, "baseline": baseline.to_dict(),
        "environment": common.environment(dev), "runs": runs, "ratios": ratios,
        "time_to_accuracy": tta})
    print(f"raw results: {out}; curves: {plot}")
    empty = [r["seed"] for r in random_runs if r["hypervolume"] <= 0]
    if empty:
        print(f"note: random found no point inside the reference in seed(s) "
              f"{', '.join(map(str, empty))}; those seeds are left out of the ratios")
    ratio = _median_ratio(ratios["a: tpe + pareto-sha"])
    print(f"budget_ratio_vs_random: {ratio:.3f}")
    return 0


def write_plot(runs: dict[str, list[dict[str, Any]]], path: Any) -> Any:
    """Hypervolume against training seconds spent, one line per strategy and seed."""
    import plotly.graph_objects as go

    from search.plots import write_html

    colors = {"a: tpe + pareto-sha": "#1f77b4", "b: nsga2": "#ff7f0e", "c: random": "#7f7f7f"}
    fig = go.Figure()
    for name, results in runs.items():
        for i, r in enumerate(results):
            xs = [sec for _, sec, _ in r["history"]]
            ys = [hv for _, _, hv in r["history"]]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv",
                                     name=name, legendgroup=name, showlegend=i == 0,
                                     line={"color": colors[name]}))
    fig.update_layout(title="Hypervolume of the front vs training seconds spent",
                      xaxis_title="training seconds spent (all trials)",
                      yaxis_title="hypervolume", template="plotly_white")
    write_html(fig, path)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
