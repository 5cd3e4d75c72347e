"""The speed-up the search finds: baseline recipe against the fastest front config that
is at least as accurate, both re-run side by side.

The baseline is the default study's (Adam, lr 1e-3, fp32, batch 64, no tricks, the
recipe's fixed 10 epochs). The search is the default study itself: ``--study NAME``
reads an existing one (e.g. after ``make run``), otherwise a fresh in-memory search of
``--search-seconds`` wall-clock seconds runs first. From its front, the fastest config
whose accuracy is >= the baseline trial's is taken. Then both are re-trained
``--repeats`` times, alternating (baseline, found, baseline, found, ...) in this process.
Each run's seconds are the training seconds to its best validation accuracy (the
point a trial reports); the last line is ``speedup: X``, the median baseline seconds
over the median found seconds. The re-runs' accuracies are printed beside it: a
speed-up only counts at equal accuracy, and so are each config's achieved TFLOP/s and,
on a GPU that ``common.PEAK_TFLOPS`` knows, its share of the peak for its precision.

``--recipe`` searches another study: ``benchmarks/cifar-sized.yaml`` is the GPU task (a
ResNet-18 from scratch on the CIFAR-sized images of ``benchmarks/tasks.py``).

    .venv/bin/python benchmarks/speedup.py --quick
"""

from __future__ import annotations

from typing import Any

import optuna

if __package__:
    from benchmarks import common
else:
    import common  # type: ignore[no-redef]

from search.reviewing import frontier
from search.training.config import TrainConfig
from search.training.data import load as load_data
from search.training.engine import train
from search.tuning import recipe as recipes
from search.tuning.loop import work
from search.tuning.study import Plan, enqueue_start

RECIPE = "studies/mnist.yaml"  # the default --recipe


def find(plan: Plan, args: Any) -> tuple[optuna.Study, str]:
    """The study to pick from: an existing one, or a fresh in-memory search."""
    if args.study:
        from search.reviewing.choose import load_study

        return load_study(args.study, args.storage), f"study {args.study!r}"
    seconds = args.search_seconds or (60.0 if args.quick else 300.0)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=plan.sampler(), pruner=plan.optuna_pruner())
    study.set_user_attr("budget", {"trials": None, "timeout": seconds})
    enqueue_start(study, plan)
    work(study, plan, timeout=seconds, device=str(args.device), progress=False)
    return study, f"a {seconds:g} s search ({len(study.trials)} trials)"


def main(argv: list[str] | None = None) -> int:
    p = common.parser("speedup", __doc__.splitlines()[0])
    p.add_argument("--recipe", default=RECIPE, help="the study recipe (default %(default)s)")
    p.add_argument("--study", help="pick from this existing study instead of searching")
    p.add_argument("--storage", default="sqlite:///studies/mnist.db")
    p.add_argument("--search-seconds", type=float, default=None,
                   help="wall-clock seconds of the fresh search (default 60 with --quick, "
                        "else 300)")
    p.add_argument("--repeats", type=common.positive_int, default=None,
                   help="re-runs of each (default 3 with --quick, else 7)")
    args = p.parse_args(argv)
    common.apply_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    repeats = args.repeats or (3 if args.quick else 7)
    dev = args.device

    rec = recipes.load(args.recipe)
    plan = Plan.from_content(rec.content(), source=args.recipe)
    note = common.busy_note()
    if note:
        print(note, flush=True)
    study, source = find(plan, args)
    trials = study.get_trials(deepcopy=False)
    data = load_data(plan.data)
    # The accuracy to match: one baseline run (also the untimed warm-up of this process).
    baseline_acc = train(plan.base, data, plan.model, device=dev).accuracy
    keys = frontier.devices([t for t in trials if frontier.feasible(t)])
    front = frontier.pareto_front(frontier.points(trials, device=keys[0] if keys else None))
    pick = frontier.fastest_reaching(front, baseline_acc)
    if pick is None:
        print(f"no front config of {source} reaches the baseline accuracy {baseline_acc:.4f}")
        print("speedup: nan")
        return 1
    found = TrainConfig.from_mapping(next(t for t in trials if t.number == pick.number)
                                     .user_attrs["config"])
    print(f"speedup on {dev}: baseline (accuracy {baseline_acc:.4f}) vs trial "
          f"{pick.number} of {source} (accuracy {pick.accuracy:.4f} in "
          f"{pick.seconds:.3f} s); {repeats} alternating re-runs each", flush=True)
    print("found config: " + ", ".join(f"{k}={v}" for k, v in found.to_dict().items()
                                       if v != getattr(plan.base, k)), flush=True)

    runs: list[dict[str, Any]] = []
    for i in range(repeats):
        for label, config in (("baseline", plan.base), ("found", found)):
            r = train(config, data, plan.model, device=dev)
            tflops, share = common.tflops_columns(dev, config.precision, r.flops_per_second)
            runs.append({"repeat": i + 1, "config": label, "accuracy": r.accuracy,
                         "seconds": r.seconds, "best_epoch": r.best_epoch,
                         "train_seconds": r.train_seconds, "tflops": tflops,
                         "share_of_peak": share})
    rows = []
    for label in ("baseline", "found"):
        mine = [r for r in runs if r["config"] == label]
        shares = [r["share_of_peak"] for r in mine if r["share_of_peak"] is not None]
        rows.append([label, common.median([r["accuracy"] for r in mine]),
                     min(r["accuracy"] for r in mine),
                     common.median([r["seconds"] for r in mine]),
                     min(r["seconds"] for r in mine), max(r["seconds"] for r in mine),
                     common.median([r["tflops"] for r in mine]),
                     f"{common.median(shares):.1%}" if shares else "-"])
    common.print_table(["config", "median accuracy", "min accuracy", "median seconds",
                        "min seconds", "max seconds", "TFLOP/s", "of peak"], rows)
    speedup = rows[0][3] / rows[1][3]
    out = common.write_json(args.out, {
        "benchmark": "speedup", "source": source, "baseline_accuracy": baseline_acc,
        "picked_trial": pick.number, "found": found.to_dict(), "baseline": plan.base.to_dict(),
        "runs": runs, "speedup": speedup, "environment": common.environment(dev)})
    print(f"raw results: {out}")
    print(f"speedup: {speedup:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
