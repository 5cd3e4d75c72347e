"""The search's efficiency against its peers: hypervolume of all measured points vs budget.

Five arms search the default study (``studies/mnist.yaml``: MNIST digits 5-9, the
built-in CNN pretrained on digits 0-4, ``spaces/default.yaml``) side by side in one
process, seeds interleaved (seed 0: a b c d e, seed 1: a b c d e, ...):

(a) ours, as ``search run`` runs it: multivariate TPE + our Pareto successive halving
    (``search.tuning.pruning``) built from the recipe's pruner section (as shipped: eta 3, rungs
    at 1/9 and 1/3 of each trial's own schedule), with the recipe's accuracy floor (points
    below it are infeasible for TPE and rank last at a rung); the peers have no floor;
(b) TPE + Syne Tune's MOASHA with the same eta, rungs and resource
    (``benchmarks/peers.py``);
(c) TPE + OptunaHub's ``pruners/multi_metric_pruner`` in joint mode over Optuna's
    ``MedianPruner``, as its example uses it (read from a local registry checkout:
    ``--optunahub-registry DIR`` or ``$OPTUNAHUB_REGISTRY``);
(d) TPE without pruning;
(e) random sampling without pruning.

Every arm gets the same sampler (``make_sampler("tpe", seed, space)``; (e) random), the
same first trials (the recipe's baseline, then its probes: ``search.tuning.study.enqueue_start``)
and the same budget. The peers only decide when to
stop a trial; TPE picks every config. A peer whose library or registry is missing is
skipped with one printed line saying why.

The budget is training seconds (the engine's timed region, summed over all trials, the
stopped ones included: each trial's last curve entry), or with ``--wall`` wall-clock
seconds per search (bookkeeping, sampling, validation and the pruner's own time
included). An arm stops starting trials once it has spent it; a trial that ends past the
budget does not count.

Every measured point counts, whatever the arm and however the trial ended: a trial's
point is read from its stored curve (its best accuracy, and the cumulative training
seconds at the first epoch that reached it), so a stopped trial contributes the point it
reached, whether the objective records it as PRUNED or as COMPLETE. Diverged and
out-of-memory trials have no point. The hypervolume of all of an arm's points is taken
against one reference point per run of this script, measured at the start from the
baseline config: the recipe's accuracy floor (the least accuracy worth having: 0.05 below
the baseline's, as shipped; points below it add nothing for any arm) and twice the
baseline's training seconds.

Reported: the median final hypervolume per arm; for each arm and seed, the fraction of
the budget it needed to reach the best peer's final hypervolume in that seed (the larger
of (b) and (c)); wall-clock per arm and the share of it spent outside training. The last
line is ``hypervolume_ratio_vs_best_peer: X``: (a)'s median hypervolume over the larger
of the peers' medians (nan when no peer ran).

    .venv/bin/python benchmarks/efficiency.py --quick
    .venv/bin/python benchmarks/efficiency.py --wall   # the same at equal wall-clock
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import optuna

if __package__:
    from benchmarks import common, peers
else:
    import common  # type: ignore[no-redef]
    import peers  # type: ignore[no-redef]

from search.errors import UserError
from search.reviewing import frontier
from search.tuning import recipe as recipes
from search.tuning.objective import INFEASIBLE, Objective, TrialError
from search.tuning.pruning import point_at
from search.tuning.study import Plan, enqueue_start, make_sampler

RECIPE = "studies/mnist.yaml"
ARMS = {
    "a: ours": "TPE + our Pareto successive halving",
    "b: moasha": "TPE + Syne Tune MOASHA",
    "c: hub-median": "TPE + OptunaHub multi_metric_pruner (joint) over MedianPruner",
    "d: tpe": "TPE, no pruning",
    "e: random": "random sampling, no pruning",
}
OURS, PEERS = "a: ours", ("b: moasha", "c: hub-median")
ACCURACY_REFERENCE = 0.8  # where the recipe has no floor


def measured_point(trial: optuna.trial.FrozenTrial) -> frontier.Point | None:
    """The (accuracy, seconds) a trial measured, from its curve: its best accuracy and the
    cumulative seconds at the first epoch that reached it. None without a curve, or for a
    diverged or out-of-memory trial."""
    curve = trial.user_attrs.get("curve") or []
    if not curve or trial.user_attrs.get("outcome") in INFEASIBLE:
        return None
    accuracy, seconds = point_at(curve, curve[-1]["epoch"], "epochs")
    return frontier.Point(trial.number, accuracy, seconds)


class Recorder:
    """A ``study.optimize`` callback: records each finished trial (its training and
    validation seconds, its point, the wall-clock since the search started) and stops the
    study once the budget is spent, counted in training seconds or, with ``wall``,
    wall-clock seconds."""

    def __init__(self, budget: float, *, wall: bool) -> None:
        self.budget, self.wall = budget, wall
        self.start = time.perf_counter()
        self.spent = 0.0
        self.records: list[dict[str, Any]] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        elapsed, spent = time.perf_counter() - self.start, frontier.spent_seconds(trial)
        self.spent += spent
        point = measured_point(trial)
        self.records.append({
            "number": trial.number, "state": trial.state.name,
            "outcome": trial.user_attrs.get("outcome"), "spent": spent, "wall": elapsed,
            "eval": (trial.user_attrs.get("result") or {}).get("eval_seconds", 0.0),
            "point": None if point is None else [point.accuracy, point.seconds]})
        if (elapsed if self.wall else self.spent) >= self.budget:
            study.stop()


def history(records: list[dict[str, Any]], reference: tuple[float, float]
            ) -> list[tuple[float, float, float]]:
    """(training seconds spent, wall-clock seconds, hypervolume of all points so far) after
    each trial, computed the same way for every arm."""
    rows, front, spent = [], [], 0.0
    for r in records:
        spent += r["spent"]
        if r["point"] is not None:
            front = frontier.pareto_front([*front, frontier.Point(r["number"], *r["point"])])
        rows.append((spent, r["wall"], frontier.hypervolume(front, reference)))
    return rows


def within(rows: list[tuple[float, float, float]], budget: float, *, wall: bool
           ) -> list[tuple[float, float, float]]:
    """The history up to the budget: a trial that ended past it does not count."""
    return [row for row in rows if row[1 if wall else 0] <= budget]


def budget_to_reach(rows: list[tuple[float, float, float]], target: float, *, wall: bool
                    ) -> float:
    """The budget spent when the hypervolume first reached ``target`` (inf: never; nan for
    a target of 0, which every arm "reaches" at once, so the seed says nothing)."""
    if target <= 0:
        return math.nan
    return next((row[1 if wall else 0] for row in rows if row[2] >= target - 1e-12),
                math.inf)


def median_of(values: list[float]) -> float:
    """The median over the values that say something (nan: none does); inf counts."""
    kept = [x for x in values if not math.isnan(x)]
    return common.median(kept) if kept else math.nan


def count(values: list[int]) -> str:
    """The median of counts, without decimals when it is whole."""
    return f"{common.median(values):g}"


def max_epochs(plan: Plan) -> int:
    """The longest schedule a config of the space can have: the top of its ``epochs``
    dimension, else the baseline's."""
    dim = next((d for d in plan.space.dimensions if d.name == "epochs"), None)
    return int(max(plan.base.epochs, dim.high if dim is not None and dim.high else 0))


def pruner_makers(plan: Plan, registry: str | None
                  ) -> tuple[dict[str, Callable[[int], Any]], dict[str, str]]:
    """For each arm that can run, a function of the seed that builds a fresh pruner (None:
    no pruning); and the arms that cannot, with the reason."""
    spec = plan.content["pruner"]
    makers: dict[str, Callable[[int], Any]] = {OURS: lambda seed: plan.pruner()}
    skipped: dict[str, str] = {}

    # MOASHA's progress measure: the curve entry of the recipe's resource, and its end.
    resource, most = {"epochs": ("epoch", max_epochs(plan)),
                      "fraction": ("fraction", 1.0)}[spec["resource"]]

    def moasha(seed: int) -> peers.MOASHAPruner:
        return peers.MOASHAPruner(eta=spec["eta"], min_resource=spec["min_resource"],
                                  max_resource=most, resource=resource, seed=seed)

    try:
        moasha(0)
        makers["b: moasha"] = moasha
    except peers.Unavailable as e:
        skipped["b: moasha"] = str(e)
    try:
        module = peers.load_hub(registry)
        makers["c: hub-median"] = lambda seed: peers.HubMedianPruner(module)
    except peers.Unavailable as e:
        skipped["c: hub-median"] = str(e)
    makers["d: tpe"] = makers["e: random"] = lambda seed: None
    return {arm: makers[arm] for arm in ARMS if arm in makers}, skipped


def search(plan: Plan, data: Any, dev: Any, *, arm: str, pruner: Any, seed: int,
           budget: float, wall: bool) -> Recorder:
    """One in-memory search of the plan's space by one arm, the baseline first, until the
    budget is spent; returns its records. Like ``search run``, without Optuna's
    ``gc_after_trial``: a full collection after every trial cost 220 ms here, more than
    most trials of this task train, and would be wall-clock the tool does not spend."""
    # The OptunaHub pruner must be the study's own pruner (should_prune asks the study).
    study_pruner = getattr(pruner, "study_pruner", None) or optuna.pruners.NopPruner()
    study = optuna.create_study(
        directions=["maximize", "minimize"], pruner=study_pruner,
        sampler=make_sampler("random" if arm == "e: random" else "tpe", seed, plan.space))
    enqueue_start(study, plan)  # the baseline and its probes, as `search run` starts
    objective = Objective(space=plan.space, base=plan.base, data=data, model=plan.model,
                          device=dev, pruner=pruner, floor=plan.floor if arm == OURS else None)
    recorder = Recorder(budget, wall=wall)
    study.optimize(objective, callbacks=[recorder], catch=(UserError, TrialError))
    return recorder


def summarize(runs: dict[str, list[dict[str, Any]]], budget: float, *, wall: bool
              ) -> tuple[dict[str, list[float]], str | None]:
    """Per arm and seed, the fraction of the budget needed to reach the best peer's final
    hypervolume in that seed; and the best peer (by median hypervolume), None if none ran."""
    ran = [p for p in PEERS if p in runs]
    if not ran:
        return {arm: [math.nan] * len(rs) for arm, rs in runs.items()}, None
    best = max(ran, key=lambda p: common.median([r["hypervolume"] for r in runs[p]]))
    targets = [max(runs[p][i]["hypervolume"] for p in ran) for i in range(len(runs[best]))]
    fractions = {arm: [budget_to_reach(r["history"], target, wall=wall) / budget
                       for r, target in zip(rs, targets, strict=True)]
                 for arm, rs in runs.items()}
    return fractions, best


def ratio(ours: float, peer: float) -> float:
    if peer > 0:
        return ours / peer
    return math.inf if ours > 0 else math.nan


def main(argv: list[str] | None = None) -> int:
    p = common.parser("efficiency", __doc__.splitlines()[0])
    p.add_argument("--seeds", type=common.positive_int, default=None,
                   help="seeds per arm (default 1 with --quick, else 3)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per search (default 15 with --quick, else 60): training "
                        "seconds, or wall-clock seconds with --wall")
    p.add_argument("--wall", action="store_true",
                   help="count the budget in wall-clock seconds per search, bookkeeping "
                        "included, instead of training seconds")
    p.add_argument("--optunahub-registry", default=None, metavar="DIR",
                   help=f"a local checkout of optuna/optunahub-registry for arm c "
                        f"(default: ${peers.HUB_ENV}; without it, arm c is skipped)")
    args = p.parse_args(argv)
    budget = args.budget or (15.0 if args.quick else 60.0)
    seeds = args.seeds or (1 if args.quick else 3)
    clock = "wall-clock" if args.wall else "training"
    common.apply_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dev = args.device
    load_start = common.load_average()

    plan = Plan.from_content(recipes.load(RECIPE).content(), source=RECIPE)
    from search.training.data import load as load_data
    from search.training.engine import train

    makers, skipped = pruner_makers(plan, args.optunahub_registry)
    data = load_data(plan.data)
    baseline = train(plan.base, data, plan.model, device=dev)
    floor = plan.floor.resolve(baseline.accuracy)
    reference = (ACCURACY_REFERENCE if floor is None else floor, 2 * baseline.seconds)
    print(f"efficiency on {dev}: {seeds} seeds x {len(makers)} arms, {budget:g} {clock} "
          f"seconds each; reference point (accuracy {reference[0]:.4f}"
          f"{'' if floor is None else ' = the floor'}, "
          f"{reference[1]:.2f} s = 2 x baseline): a hypervolume of at most "
          f"{(1 - reference[0]) * reference[1]:.3f} (accuracy 1 in no time)", flush=True)
    for arm, reason in skipped.items():
        print(f"skipped {arm}: {reason}", flush=True)
    note = common.busy_note()
    if note:
        print(note, flush=True)

    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in makers}
    for seed in range(seeds):
        for arm, make in makers.items():
            rec = search(plan, data, dev, arm=arm, pruner=make(seed), seed=seed,
                         budget=budget, wall=args.wall)
            rows = within(history(rec.records, reference), budget, wall=args.wall)
            runs[arm].append({
                "seed": seed, "trials": len(rec.records),
                "pruned": sum(r["outcome"] == "pruned" for r in rec.records),
                "points": sum(r["point"] is not None for r in rec.records),
                "hypervolume": rows[-1][2] if rows else 0.0,
                "training_seconds": rec.spent,
                "validation_seconds": sum(r["eval"] for r in rec.records),
                "wall_seconds": rec.records[-1]["wall"] if rec.records else 0.0,
                "history": rows, "records": rec.records})
            r = runs[arm][-1]
            print(f"  seed {seed} {arm}: {r['trials']} trials ({r['pruned']} pruned), "
                  f"hypervolume {r['hypervolume']:.4f}, {r['wall_seconds']:.1f} s wall",
                  flush=True)

    fractions, best = summarize(runs, budget, wall=args.wall)
    medians = {arm: common.median([r["hypervolume"] for r in rs]) for arm, rs in runs.items()}
    reach = f"{clock} budget to reach best peer's"
    common.print_table(
        ["arm", "trials", "pruned", "hypervolume", "vs best peer", reach],
        [[arm, count([r["trials"] for r in rs]), count([r["pruned"] for r in rs]),
          medians[arm],
          ratio(medians[arm], medians[best]) if best else math.nan,
          median_of(fractions[arm])] for arm, rs in runs.items()])
    print()
    common.print_table(["seed", "arm", "trials", "pruned", "hypervolume", reach],
                       [[r["seed"], arm, r["trials"], r["pruned"], r["hypervolume"], f]
                        for arm, rs in runs.items()
                        for r, f in zip(rs, fractions[arm], strict=True)])
    print()
    common.print_table(
        ["arm", "wall s", "training s", "validation s", "outside training",
         "outside ms/trial"],
        [[arm, *(common.median([r[k] for r in rs]) for k in
                 ("wall_seconds", "training_seconds", "validation_seconds")),
          common.median([1 - r["training_seconds"] / r["wall_seconds"] for r in rs]),
          common.median([1000 * (r["wall_seconds"] - r["training_seconds"]) / r["trials"]
                         for r in rs])] for arm, rs in runs.items()])

    summary = ratio(medians[OURS], medians[best]) if best else math.nan
    out = common.write_json(args.out, {
        "benchmark": "efficiency", "clock": clock, "budget_seconds": budget, "seeds": seeds,
        "reference": reference, "baseline": baseline.to_dict(), "arms": ARMS,
        "skipped": skipped, "peers": peers.versions(args.optunahub_registry),
        "environment": common.environment(dev), "load_average_start": load_start,
        "runs": runs, "best_peer": best, "fractions_to_reach_best_peer": fractions,
        "hypervolume_ratio_vs_best_peer": summary})
    plot = write_plot(runs, out.with_suffix(".html"), wall=args.wall)
    print(f"raw results: {out}; curves: {plot}")
    if best is None:
        print("note: no peer ran, so there is nothing to compare with (see skipped above)")
    print(f"hypervolume_ratio_vs_best_peer: {summary:.3f}")
    return 0


def write_plot(runs: dict[str, list[dict[str, Any]]], path: Any, *, wall: bool) -> Any:
    """Hypervolume against the budget spent, one line per arm and seed."""
    import plotly.graph_objects as go

    from search.reviewing.plots import write_html

    colors = dict(zip(ARMS, ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#7f7f7f"),
                      strict=True))
    fig = go.Figure()
    for arm, rs in runs.items():
        for i, r in enumerate(rs):
            fig.add_trace(go.Scatter(
                x=[row[1 if wall else 0] for row in r["history"]],
                y=[row[2] for row in r["history"]], mode="lines", line_shape="hv",
                name=arm, legendgroup=arm, showlegend=i == 0, line={"color": colors[arm]}))
    spent = "wall-clock seconds" if wall else "training seconds (all trials)"
    fig.update_layout(title=f"Hypervolume of all measured points vs {spent} spent",
                      xaxis_title=f"{spent} spent", yaxis_title="hypervolume",
                      template="plotly_white")
    write_html(fig, path)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
