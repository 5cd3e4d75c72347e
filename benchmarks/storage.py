"""Storage at scale: the review commands on studies of 1,000 and 10,000 trials, the tool's
per-trial bookkeeping against a bare Optuna loop, and the CLI's start-up.

1. Studies of synthetic trials (params from the default space, a 10-epoch curve, the
   config, result and outcome the tool stores) are written through Optuna's API into
   SQLite, and into PostgreSQL when the test fixture's server can start here (the
   PostgreSQL binaries are installed). ``search best``, ``search pareto`` and
   ``search status`` are timed as whole commands (``python -m search ...``, median of
   ``--repeats``), start-up included.
2. Bookkeeping: the tool's objective (curve written every epoch, our pruner consulted,
   result and outcome stored) with a no-op trainer, against a bare ``study.optimize``
   whose objective suggests the same space and returns two values; both on SQLite.
   The difference is what the tool adds to every trial.
3. Start-up: ``search --help`` as a whole command, and whether importing the CLI
   imports torch (it must not).

The last line is ``best_10k_seconds: X`` (SQLite). Writing 10,000 trials through Optuna
takes about 4 minutes here (some 25 ms per trial, in Optuna's ORM), so ``--quick`` measures
1,000 and 2,000 trials on SQLite only and extrapolates that line along the straight line
through them (it says so); the full mode measures 1,000 and 10,000 on both storages.

    .venv/bin/python benchmarks/storage.py --quick
"""

from __future__ import annotations

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
from search.tuning.study import Plan

RECIPE = "studies/digits.yaml"


def synthetic_study(url: str, n: int, plan: Plan, seed: int = 0) -> None:
    """A pareto study named ``bench`` with ``n`` finished trials, as the tool stores them."""
    rng = random.Random(seed)
    study = optuna.create_study(study_name="bench", storage=url,
                                directions=["maximize", "minimize"])
    study.set_user_attr("recipe", plan.content)
    study.set_user_attr("objective", "pareto")
    sampler = optuna.samplers.RandomSampler(seed=seed)
    trials = []
    for _ in range(n):
        probe = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        t = probe.ask()
        config = plan.space.suggest(t, plan.base)
        pruned = rng.random() < 0.6
        epochs = rng.randint(1, 3) if pruned else 10
        speed = rng.uniform(0.02, 0.3)
        curve = [{"epoch": e, "seconds": e * speed, "accuracy": min(1.0, 0.2 + 0.1 * e
                                                                    + rng.random() * 0.1),
                  "loss": 1.0 / e} for e in range(1, epochs + 1)]
        best = max(curve, key=lambda c: c["accuracy"])
        attrs = {"curve": curve, "config": config.to_dict(), "device": "cpu:bench x2",
                 "outcome": "pruned" if pruned else "completed", "reason": "",
                 "result": {"accuracy": best["accuracy"], "seconds": best["seconds"],
                            "best_epoch": best["epoch"], "epochs_run": epochs}}
        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
        trials.append(optuna.trial.create_trial(
            state=state, params=t.params, distributions=t.distributions, user_attrs=attrs,
            values=None if pruned else [best["accuracy"], best["seconds"]]))
    study.add_trials(trials)


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


def bookkeeping(plan: Plan, url: str, trials: int) -> tuple[float, float]:
    """Seconds per trial: the tool's objective with a no-op trainer, and bare Optuna."""
    import search.tuning.objective as objective_module
    from search.training.engine import TrainResult
    from search.tuning.pruning import make_pruner

    def fake_train(config: TrainConfig, data: Any, model: Any, *, device: Any,
                   callback: Any) -> TrainResult:
        curve = []
        for epoch in range(1, config.epochs + 1):
            curve.append({"epoch": epoch, "seconds": 0.01 * epoch, "accuracy": 0.5,
                          "loss": 1.0})
            if callback(epoch, 0.5, 1.0, 0.01 * epoch):
                break
        return TrainResult("completed", "", len(curve), 1, 0.5, 0.01, 0.5, 0.01 * len(curve),
                           0.0, 1.0, 1.0, 1.0, {"key": "cpu:bench"}, curve, config.to_dict())

    real = objective_module.train
    objective_module.train = fake_train
    try:
        tool = optuna.create_study(storage=url, study_name="tool",
                                   directions=["maximize", "minimize"],
                                   sampler=optuna.samplers.RandomSampler(seed=0))
        import torch

        obj = objective_module.Objective(space=plan.space, base=plan.base, data=None,
                                         model=plan.model, device=torch.device("cpu"),
                                         pruner=make_pruner(plan.content["pruner"]))
        start = time.perf_counter()
        tool.optimize(obj, n_trials=trials)
        tool_seconds = (time.perf_counter() - start) / trials
    finally:
        objective_module.train = real

    bare = optuna.create_study(storage=url, study_name="bare",
                               directions=["maximize", "minimize"],
                               sampler=optuna.samplers.RandomSampler(seed=0))
    start = time.perf_counter()
    bare.optimize(lambda t: (plan.space.suggest(t, plan.base).lr, 0.1), n_trials=trials)
    return tool_seconds, (time.perf_counter() - start) / trials


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
    sizes = (1000, 2000) if args.quick else (1000, 10000)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rec = recipes.load(RECIPE)
    plan = Plan.from_content(rec.content(), source=RECIPE)
    cleanup: list[Any] = []
    tmp = Path(tempfile.mkdtemp(prefix="search-bench-"))
    rows, raw = [], []
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
                html = str(tmp / f"pareto-{backend}-{n}.html")
                timings = {
                    "best": time_command(["best", "bench", "--storage", url], repeats),
                    "pareto": time_command(["pareto", "bench", "--storage", url, "-o", html],
                                           repeats),
                    "status": time_command(["status", "bench", "--storage", url], repeats)}
                rows.append([backend, n, write, timings["best"], timings["pareto"],
                             timings["status"]])
                raw.append({"backend": backend, "trials": n, "write_seconds": write,
                            **timings})
                print(f"  {backend} {n}: written in {write:.1f}s", flush=True)
        common.print_table(["storage", "trials", "write s", "best s", "pareto s", "status s"],
                           rows)

        n = 30 if args.quick else 200
        tool, bare = bookkeeping(plan, f"sqlite:///{tmp}/bookkeeping.db", n)
        common.print_table(["per trial (SQLite)", "ms"],
                           [["bare optuna.optimize", bare * 1e3],
                            ["search objective, no-op training", tool * 1e3],
                            ["added by search", (tool - bare) * 1e3]])

        help_seconds = time_command(["--help"], max(3, repeats))
        torch_loaded = subprocess.run(
            [sys.executable, "-c", "import sys, search.cli; print('torch' in sys.modules)"],
            capture_output=True, text=True).stdout.strip()
        print(f"search --help: {help_seconds:.3f} s as a whole command; importing the CLI "
              f"imports torch: {torch_loaded}")
    finally:
        for fn in cleanup:
            fn()
    (n1, t1), (n2, t2) = [(r["trials"], r["best"]) for r in raw if r["backend"] == "sqlite"]
    best_10k = t1 + (t2 - t1) * (10000 - n1) / (n2 - n1)
    measured = n2 == 10000
    out = common.write_json(args.out, {
        "benchmark": "storage", "commands": raw, "best_10k_seconds": best_10k,
        "best_10k_measured": measured,
        "bookkeeping_ms": {"tool": tool * 1e3, "bare": bare * 1e3},
        "help_seconds": help_seconds, "cli_imports_torch": torch_loaded == "True",
        "environment": common.environment(common.device("cpu"))})
    print(f"raw results: {out}")
    if not measured:
        print(f"note: best_10k_seconds is extrapolated from {n1:,} and {n2:,} trials "
              f"(the full mode measures it)")
    print(f"best_10k_seconds: {best_10k:.3f}")
    return 0


def _db(url: str, n: int) -> str:
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
