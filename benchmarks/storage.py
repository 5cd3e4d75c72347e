"""Storage at scale: the review commands and the per-trial bookkeeping on studies of 100,
1,000 and 10,000 trials, against a bare Optuna loop, and the CLI's start-up.

1. Studies of synthetic trials (params from the default space, a curve, the config,
   result and outcome, the rung records the pruner reads, a baseline) are written
   through Optuna's API into SQLite, and into PostgreSQL when the test fixture's server
   can start here (the PostgreSQL binaries are installed). ``search best``, ``search
   pareto`` and ``search status`` are timed as whole commands (``python -m search ...``,
   median of ``--repeats``), start-up included.
2. Bookkeeping on each of those studies: the tool's objective with no-op training
   (curve written every epoch, rungs recorded, our pruner deciding against every
   trial already there, the budget counted, result and outcome stored), median
   milliseconds per trial and per rung decision; and a bare ``study.optimize`` whose
   objective suggests the same space and returns two values. The goals (issue 14): a
   decision and a trial cost the same at 10,000 trials as at 100 (within 2x), a
   decision at most 50 ms, and each command at most 3 s at 10,000 trials.
3. Start-up: ``search --help`` as a whole command, and whether importing the CLI
   imports torch (it must not).

The last line is ``best_10k_seconds: X`` (SQLite). Writing 10,000 trials through Optuna
takes about 2 minutes here (in Optuna's ORM), so ``--quick`` measures 100 and 1,000 trials
on SQLite only and extrapolates that line along the straight line through them (it says
so); the full mode measures 100, 1,000 and 10,000 on both storages.

    .venv/bin/python benchmarks/storage.py --quick
"""

from __future__ import annotations

import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

if __package__:
    from benchmarks import common
else:
    import common  # type: ignore[no-redef]

from search.training.config import TrainConfig
from search.tuning import recipe as recipes
from search.tuning.pruning import point_at, rungs
from search.tuning.study import Plan

RECIPE = "studies/digits.yaml"


def synthetic_study(url: str, n: int, plan: Plan, seed: int = 0) -> None:
    """A pareto study named ``bench`` with ``n`` finished trials, as the tool stores them:
    params from the space, the config, a curve, the result and outcome, and the rung
    records the pruner reads (trial 0 is the baseline)."""
    from search.tuning.pruning import start_recording

    rng = random.Random(seed)
    study = optuna.create_study(study_name="bench", storage=url,
                                directions=["maximize", "minimize"])
    study.set_user_attr("recipe", plan.content)
    study.set_user_attr("objective", "pareto")
    start_recording(study)
    pruner = plan.pruner()
    sampler = optuna.samplers.RandomSampler(seed=seed)
    trials = []
    for i in range(n):
        probe = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        t = probe.ask()
        config = plan.space.suggest(t, plan.base)
        pruned = i > 0 and rng.random() < 0.6
        epochs = rng.randint(1, 3) if pruned else config.epochs
        speed = rng.uniform(0.02, 0.3)
        curve = [{"epoch": e, "seconds": e * speed, "accuracy": min(1.0, 0.2 + 0.1 * e
                                                                    + rng.random() * 0.1),
                  "loss": 1.0 / e, "fraction": e / config.epochs} for e in range(1, epochs + 1)]
        best = max(curve, key=lambda c: c["accuracy"])
        attrs = {"curve": curve, "config": config.to_dict(), "device": DEVICE,
                 "outcome": "pruned" if pruned else "completed", "reason": "",
                 "worker": "bench", "baseline": i == 0,
                 "result": {"accuracy": best["accuracy"], "seconds": best["seconds"],
                            "best_epoch": best["epoch"], "epochs_run": epochs}}
        records = {}
        for level in rungs(pruner.min_resource, pruner.eta, 1.0):
            point = point_at(curve, level, pruner.resource)
            if point is not None:
                records[pruner.key(level)] = [*point, DEVICE, i == 0]
        trials.append(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, params=t.params,
            distributions=t.distributions, user_attrs=attrs, system_attrs=records,
            values=[best["accuracy"], best["seconds"]]))
    study.add_trials(trials)


DEVICE = "cpu:bench x2"


def time_command(args: list[str], repeats: int) -> float:
    """Median wall-clock seconds of ``python -m search ARGS`` (it must succeed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "search", *args], capture_output=True,
                              text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"search {' '.join(args)} failed: {done.stderr.strip()}")
    return statistics.median(times)


def bookkeeping(plan: Plan, url: str, trials: int) -> dict[str, float]:
    """The tool's objective with no-op training on the ``bench`` study at ``url`` (which
    holds its trials already): milliseconds per trial (curve written each epoch, rungs
    recorded, the budget check, result and outcome stored) and per rung decision."""
    import torch

    import search.tuning.objective as objective_module
    from search.training.engine import TrainResult

    rng = random.Random(1)

    def fake_train(config: TrainConfig, data: Any, model: Any, *, device: Any,
                   callback: Any, **_: Any) -> TrainResult:
        curve, speed = [], rng.uniform(0.02, 0.3)
        for epoch in range(1, config.epochs + 1):
            acc = min(1.0, 0.2 + 0.1 * epoch + rng.random() * 0.1)
            curve.append({"epoch": epoch, "seconds": speed * epoch, "accuracy": acc,
                          "loss": 1.0})
            if callback(epoch, acc, 1.0, speed * epoch):
                break
        best = max(curve, key=lambda c: c["accuracy"])
        return TrainResult("completed", "", len(curve), best["epoch"], best["accuracy"],
                           best["seconds"], best["accuracy"], curve[-1]["seconds"], 0.0, 1.0,
                           1.0, 1.0, {"key": DEVICE}, curve, config.to_dict())

    study = optuna.load_study(study_name="bench", storage=url,
                              sampler=optuna.samplers.RandomSampler(seed=0))
    pruner = plan.pruner()
    decisions: list[float] = []
    prune = pruner.prune

    def timed_prune(study: optuna.Study, trial: Any, curve: list[dict[str, Any]]) -> Any:
        start = time.perf_counter()
        out = prune(study, trial, curve)
        if pruner._rung_crossed(curve) is not None:
            decisions.append(time.perf_counter() - start)
        return out

    pruner.prune = timed_prune  # type: ignore[method-assign]
    real = objective_module.train
    objective_module.train = fake_train
    try:
        obj = objective_module.Objective(space=plan.space, base=plan.base, data=None,
                                         model=plan.model, device=torch.device("cpu"),
                                         pruner=pruner, floor=plan.floor,
                                         budget=10 ** 9, worker="bench")
        obj.device_key = DEVICE  # compete with the synthetic trials, not as this machine
        per_trial = []
        for _ in range(trials):
            start = time.perf_counter()
            study.optimize(obj, n_trials=1)
            per_trial.append(time.perf_counter() - start)
    finally:
        objective_module.train = real
    return {"trial_ms": statistics.median(per_trial) * 1e3,
            "decision_ms": statistics.median(decisions) * 1e3 if decisions else math.nan,
            "decisions": len(decisions)}


def bare(plan: Plan, url: str, trials: int) -> float:
    """Milliseconds per trial of a bare ``study.optimize`` suggesting the same space."""
    study = optuna.create_study(storage=url, study_name="bare",
                                directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    start = time.perf_counter()
    study.optimize(lambda t: (plan.space.suggest(t, plan.base).lr, 0.1), n_trials=trials)
    return (time.perf_counter() - start) / trials * 1e3


def postgres_url(stack: list[Any]) -> str | None:
    """A database on a throwaway PostgreSQL server (the tests' fixture), or None."""
    try:
        import shutil

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests import postgres as pg

        bindir = pg.find_bindir()
        if bindir is None:
            return None
        runner = pg._Runner()
        root = Path(tempfile.mkdtemp(prefix="search-bench-pg-"))
        runner.give(root)
        port = pg._start_server(bindir, runner, root)
        stack.append(lambda: (runner.run([str(bindir / "pg_ctl"), "-D", str(root / "data"),
                                          "-m", "immediate", "stop"], timeout=60),
                              shutil.rmtree(root, ignore_errors=True)))
        return pg.PostgresServer(host=pg.HOST, port=port, user=pg.USER).create_database()
    except Exception as e:  # noqa: BLE001 - a benchmark goes on without PostgreSQL
        print(f"note: no PostgreSQL here ({e}); SQLite only", flush=True)
        return None


def main(argv: list[str] | None = None) -> int:
    p = common.parser("storage", __doc__.splitlines()[0])
    p.add_argument("--repeats", type=common.positive_int, default=None,
                   help="runs of each command (default 1 with --quick, else 3)")
    p.add_argument("--no-postgres", action="store_true",
                   help="SQLite only (--quick always is)")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = (100, 1000) if args.quick else (100, 1000, 10000)
    per_size = 10 if args.quick else 20  # objective trials timed on each study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rec = recipes.load(RECIPE)
    plan = Plan.from_content(rec.content(), source=RECIPE)
    cleanup: list[Any] = []
    tmp = Path(tempfile.mkdtemp(prefix="search-bench-"))
    rows, raw, bares = [], [], {}
    try:
        backends = {"sqlite": lambda n: f"sqlite:///{tmp}/bench-{n}.db"}
        pg = None if args.no_postgres or args.quick else postgres_url(cleanup)
        if pg:
            backends["postgresql"] = lambda n: pg.rsplit("/", 1)[0] + "/" + _db(pg, n)
        for backend, url_for in backends.items():
            for n in sizes:
                url = url_for(n)
                start = time.perf_counter()
                synthetic_study(url, n, plan)
                write = time.perf_counter() - start
                print(f"  {backend} {n}: written in {write:.1f}s", flush=True)
                html = str(tmp / f"pareto-{backend}-{n}.html")
                timings = {
                    "best": time_command(["best", "bench", "--storage", url], repeats),
                    "pareto": time_command(["pareto", "bench", "--storage", url, "-o", html],
                                           repeats),
                    "status": time_command(["status", "bench", "--storage", url], repeats)}
                kept = bookkeeping(plan, url, per_size)
                rows.append([backend, n, write, timings["best"], timings["pareto"],
                             timings["status"], kept["trial_ms"], kept["decision_ms"],
                             kept["decisions"]])
                raw.append({"backend": backend, "trials": n, "write_seconds": write,
                            **timings, **kept})
            bares[backend] = bare(plan, url_for("bare"), per_size * 3)
        common.print_table(["storage", "trials", "write s", "best s", "pareto s", "status s",
                            "ms/trial", "ms/decision", "decisions"], rows)
        print("ms/trial: the tool's objective with no-op training (curve written each epoch, "
              "rungs recorded and decided, budget counted, result stored); bare "
              "study.optimize on the same space: " +
              ", ".join(f"{b} {ms:.1f} ms" for b, ms in bares.items()))
        goals = []
        for backend in backends:
            mine = {r["trials"]: r for r in raw if r["backend"] == backend}
            small, big = mine[sizes[0]], mine[sizes[-1]]
            goals.append([backend, f"{sizes[-1]:,} / {sizes[0]:,}",
                          big["trial_ms"] / small["trial_ms"],
                          big["decision_ms"] / small["decision_ms"],
                          max(big["best"], big["pareto"], big["status"])])
        common.print_table(["goals", "trials", "trial ms ratio (<= 2)",
                            "decision ms ratio (<= 2)", "slowest command s (<= 3)"], goals)

        help_seconds = time_command(["--help"], max(3, repeats))
        torch_loaded = subprocess.run(
            [sys.executable, "-c", "import sys, search.cli; print('torch' in sys.modules)"],
            capture_output=True, text=True).stdout.strip()
        print(f"search --help: {help_seconds:.3f} s as a whole command; importing the CLI "
              f"imports torch: {torch_loaded}")
    finally:
        for fn in cleanup:
            fn()
    (n1, t1), (n2, t2) = [(r["trials"], r["best"]) for r in raw
                          if r["backend"] == "sqlite" and r["trials"] in sizes[-2:]]
    best_10k = t1 + (t2 - t1) * (10000 - n1) / (n2 - n1)
    measured = n2 == 10000
    out = common.write_json(args.out, {
        "benchmark": "storage", "commands": raw, "best_10k_seconds": best_10k,
        "best_10k_measured": measured, "bare_ms": bares,
        "help_seconds": help_seconds, "cli_imports_torch": torch_loaded == "True",
        "environment": common.environment(common.device("cpu"))})
    print(f"raw results: {out}")
    if not measured:
        print(f"note: best_10k_seconds is extrapolated from {n1:,} and {n2:,} trials "
              f"(the full mode measures it)")
    print(f"best_10k_seconds: {best_10k:.3f}")
    return 0


def _db(url: str, n: int | str) -> str:
    """A new database per size on the same server."""
    import psycopg

    name = f"bench_{n}"
    base = url.rsplit("/", 1)[0]
    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres",
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return name


if __name__ == "__main__":
    raise SystemExit(main())
