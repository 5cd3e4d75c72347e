"""The `search` command: thin click commands over the library API.

Each command parses, calls one library function, prints and returns an exit code. Bad
input is one line on stderr and exit code 2. Heavy imports (torch, optuna) happen inside
commands, so ``search --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from search.errors import Interrupted, UserError


class _Group(click.Group):
    """Turns a UserError anywhere below into one line and exit code 2, and an interrupted
    worker into one line and exit code 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
        except Interrupted as e:
            click.echo(str(e), err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="search")
def cli() -> None:
    """Find the PyTorch training recipe on the speed/accuracy Pareto front."""


def _parse_sets(items: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    from search.files import load_yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item}: expected key=value")
        try:
            out[key.strip()] = load_yaml(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item}: cannot parse the value") from None
    return out


@cli.command()
@click.argument("study", type=click.Path(dir_okay=True))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one training configuration field (repeatable).")
@click.option("--config", "config_file", type=click.Path(), default=None,
              help="An exported config file (from `search export`).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--quiet", is_flag=True, help="No per-epoch lines.")
def train(study: str, sets: tuple[str, ...], config_file: str | None, device: str,
          as_json: bool, quiet: bool) -> None:
    """Train one configuration with the data and model of STUDY (a recipe file)."""
    from search.training.config import TrainConfig
    from search.tuning import recipe as recipes

    rec = recipes.load(study)
    config = rec.baseline_config()
    if config_file:
        from search.reviewing.export import load_config

        config = load_config(config_file)
    overrides = _parse_sets(sets)
    try:  # all at once: `--set optimizer=momentum --set momentum=0.8` in any order
        config = TrainConfig.from_mapping(overrides, base=config)
    except UserError:  # then one at a time, to name the --set item at fault
        for key, value in overrides.items():
            config = TrainConfig.from_mapping({key: value}, source=f"--set {key}={value}",
                                              base=config)
        raise

    from search import metric as metrics
    from search.reviewing.report import fmt_accuracy

    metric = metrics.parse(rec.metric, source=str(rec.path))

    def progress(epoch: int, acc: float, loss: float, seconds: float) -> None:
        if not quiet and not as_json:
            lost = f"val_loss {loss:.4f}  " if loss == loss else ""  # a trainer may give none
            click.echo(f"  epoch {epoch:3d}/{config.train_epochs}  "
                       f"val_{metric.short} {metric.value(acc):.4f}  "
                       f"{lost}train {seconds:7.2f}s", err=True)

    result = rec.train_one(config, device=device, callback=progress)
    summary = {"metric": metric.name, "accuracy": metric.value(result.accuracy),
               "test_accuracy": metric.value(result.test_accuracy),
               "seconds": result.seconds,
               "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
               "outcome": result.outcome, "reason": result.reason,
               "final_accuracy": result.final_accuracy, "train_seconds": result.train_seconds,
               "eval_seconds": result.eval_seconds,
               "samples_per_second": result.samples_per_second,
               "flops_per_sample": result.flops_per_sample,
               "flops_per_second": result.flops_per_second, "device": result.device["key"],
               "config": result.config}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"{metric.name} {summary['accuracy']:.4f} "
                   f"(test {fmt_accuracy(summary['test_accuracy'])}) "
                   f"in {result.seconds:.2f}s "
                   f"(best epoch {result.best_epoch} of {result.epochs_run}), "
                   f"outcome {result.outcome}" + (f": {result.reason}" if result.reason else ""))
        rate = (f"{result.samples_per_second:,.0f} samples/s, "
                f"{result.flops_per_second / 1e9:.1f} GFLOP/s on " if result.samples_per_second
                else "")  # a user's trainer counts neither
        click.echo(f"{rate}{result.device['key']}")
    if result.outcome in ("diverged", "oom"):
        sys.exit(1)


def _recipe_options(f: Any) -> Any:
    """The options of the commands that make (or resume) a recipe's study."""
    f = click.option("--sampler", default=None, help="tpe, nsga2, random, gp, qmc or grid.")(f)
    f = click.option("--seed", type=click.IntRange(min=0), default=None)(f)
    f = click.option("--storage", default=None, help="SQLAlchemy URL (default: the recipe's).")(f)
    f = click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Stop starting trials after this many seconds.")(f)
    f = click.option("--trials", type=click.IntRange(min=1), default=None,
                     help="Total finished trials the study should hold (default: the "
                          "recipe's).")(f)
    return click.argument("study", type=click.Path())(f)


def _recipe(path: str, sampler: str | None) -> Any:
    """The recipe at ``path``; an unknown ``--sampler`` is refused before any work."""
    from search.tuning import recipe as recipes

    rec = recipes.load(path)
    if sampler is not None and sampler not in recipes.SAMPLERS:
        raise UserError(f"--sampler: unknown sampler (valid: {', '.join(recipes.SAMPLERS)}), "
                        f"got {sampler!r}")
    return rec


@cli.command()
@_recipe_options
@click.option("--device", default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes on this host (the CPU cores are split between them; "
                   "default 1), or at most this many on the --ray cluster.")
@click.option("--devices", default=None,
              help="One worker per device: cuda:0,cuda:1,... (with --workers K, K workers "
                   "each owning its share, for data_parallel runs).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Place workers on a Ray cluster: its address, auto, or local (start one "
                   "here). One worker per GPU, else per --ray-cores CPUs.")
@click.option("--ray-cores", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU cores per worker on a Ray cluster without GPUs.")
@click.option("--rank-shared", is_flag=True,
              help="Rank trials that shared a device (--workers) with those that did not: "
                   "one device key for both (each still records how many shared).")
@click.option("--json", "as_json", is_flag=True, help="Print the front as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(study: str, trials: int | None, timeout: float | None, storage: str | None,
        device: str, seed: int | None, sampler: str | None, workers: int | None,
        devices: str | None, ray_address: str | None, ray_cores: int, rank_shared: bool,
        as_json: bool, quiet: bool) -> None:
    """Run (or resume) the study of a recipe file and print its Pareto front."""
    import time

    from search.reviewing import report
    from search.tuning import loop
    from search.tuning import study as studies
    from search.tuning import workers as local
    from search.tuning.storage import mask_url as mask

    rec = _recipe(study, sampler)
    url = storage or rec.storage
    if rank_shared:  # read by every worker this process starts (timing.fingerprint)
        os.environ["SEARCH_RANK_SHARED"] = "1"
    if ray_address is not None and devices is not None:
        raise UserError("--ray and --devices: Ray places the workers on the cluster's devices")
    launch = local.plan_launch(None if ray_address else workers, devices, url)
    plan = studies.plan_for(rec)
    opened = studies.open_study(rec, plan, storage=url, sampler=sampler, seed=seed,
                                trials=trials, timeout=timeout)
    progress = not (quiet or as_json)
    if ray_address is not None:
        from search.tuning import cluster

        start, before = time.perf_counter(), loop.finished_count(opened)
        cluster.run(opened, url, ray_address, cores=ray_cores, workers=workers,
                    trials=trials, timeout=timeout,
                    note=lambda line: click.echo(line, err=True) if progress else None)
        summary = loop.RunSummary(opened, loop.finished_count(opened) - before,
                                  time.perf_counter() - start)
    elif len(launch.devices) == 1:
        summary = loop.work(opened, plan, trials=trials, timeout=timeout,
                           device=device if launch.devices == ("auto",) else
                           launch.devices[0], progress=progress)
    else:
        start, before = time.perf_counter(), loop.finished_count(opened)
        local.launch(opened, url, launch, trials=trials, timeout=timeout, progress=progress)
        summary = loop.RunSummary(opened, loop.finished_count(opened) - before,
                                  time.perf_counter() - start)
    url = mask(url)
    if as_json:
        click.echo(json.dumps({"study": rec.name, "storage": url, "ran": summary.ran,
                               "seconds": summary.seconds,
                               "front": report.front_rows(summary.study)}))
        return
    click.echo(report.front_table(summary.study))
    click.echo(f"ran {summary.ran} trials in {summary.seconds:.0f}s; study {rec.name!r} "
               f"stored in {url}")


@cli.command()
@_recipe_options
def create(study: str, trials: int | None, timeout: float | None, storage: str | None,
           seed: int | None, sampler: str | None) -> None:
    """Make the study of a recipe file (its baseline queued) without running a trial, for
    workers to join: `search worker`, a SLURM array, a Kubernetes Job (deploy/)."""
    from search.tuning import study as studies
    from search.tuning.storage import mask_url as mask

    rec = _recipe(study, sampler)
    url = storage or rec.storage
    opened = studies.open_study(rec, studies.plan_for(rec), storage=url, sampler=sampler,
                                seed=seed, trials=trials, timeout=timeout)
    budget = opened.user_attrs.get("budget") or {}
    click.echo(f"study {rec.name!r} ready in {mask(url)}: a budget of {budget.get('trials')} "
               f"trials, {len(opened.trials)} in it; join workers with `search worker "
               f"{rec.name} --storage URL`")


@cli.command()
@click.argument("name")
@click.option("--storage", required=True, help="The study's storage URL.")
@click.option("--device", default="auto", show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Total finished trials (default: the study's budget).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads for this worker.")
@click.option("--quiet", is_flag=True, help="No progress bars or notes.")
def worker(name: str, storage: str, device: str, trials: int | None, timeout: float | None,
           threads: int | None, quiet: bool) -> None:
    """Join study NAME (made by `search run`) and run trials until its budget is met."""
    from search.tuning import loop
    from search.tuning import study as studies
    from search.tuning.storage import is_sqlite

    opened, plan = studies.attach(name, storage)
    if is_sqlite(storage) and not quiet:
        click.echo("note: SQLite serves one worker at a time (two can take the same queued "
                   "trial); for several use journal:///PATH or a postgresql:// URL", err=True)
    summary = loop.work(opened, plan, trials=trials, timeout=timeout, device=device,
                        progress=not quiet, threads=threads)
    click.echo(f"worker ran {summary.ran} trials in {summary.seconds:.0f}s", err=True)


@cli.command()
@click.argument("name", required=False)
@click.option("--storage", default=None,
              help="SQLAlchemy URL (default: sqlite:///studies/NAME.db, or studies/mnist.db).")
@click.option("--json", "as_json", is_flag=True)
def status(name: str | None, storage: str | None, as_json: bool) -> None:
    """Per study: trials by outcome, front size, best accuracy, fastest time, running now."""
    from search.reviewing import report

    rows = report.status(_storage(name or "mnist", storage), name)
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(report.status_table(rows))


DEFAULT_STORAGE = "sqlite:///studies/{name}.db"


def _storage(name: str, storage: str | None) -> str:
    """The storage URL: given, or the default SQLite file of a study named ``name``."""
    return storage or DEFAULT_STORAGE.format(name=name)


def _study_options(f: Any) -> Any:
    f = click.option("--storage", default=None,
                     help="SQLAlchemy URL (default: sqlite:///studies/NAME.db).")(f)
    f = click.option("--device-key", default=None,
                     help="Only trials measured on this device (default: the most used).")(f)
    return click.argument("name")(f)


def _choice_options(f: Any) -> Any:
    f = click.option("--min-accuracy", type=click.FloatRange(0, 1), default=None,
                     help="The fastest config reaching this validation accuracy (the study's "
                          "metric: at most this for a minimized one).")(f)
    f = click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True),
                     default=None, help="The most accurate config within this time.")(f)
    f = click.option("--knee", is_flag=True, help="The knee of the front (the default).")(f)
    return f


def _choose(name: str, storage: str | None, device_key: str | None, min_accuracy: float | None,
            max_seconds: float | None, knee: bool, trial: int | None = None):  # noqa: ANN202
    from search import metric as metrics
    from search.reviewing import choose as chooser
    from search.tuning import floor as floors

    given = [o for o, v in (("--min-accuracy", min_accuracy), ("--max-seconds", max_seconds),
                            ("--knee", knee or None), ("--trial", trial)) if v is not None]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)}: choose one")
    study, trials = chooser.load_complete(name, _storage(name, storage))
    device, note = chooser.device_of(trials, device_key)
    if note:
        click.echo(note, err=True)
    floor = floors.of_study(study, trials)
    # --min-accuracy is in the metric's units: "reaching" a minimized one is at most it.
    reach = None if min_accuracy is None else metrics.of_study(study).score(min_accuracy)
    picked = chooser.choose(trials, name, min_accuracy=reach, max_seconds=max_seconds,
                            trial=trial, device=device, floor=floor)
    return study, chooser.whole(study, picked)


@cli.command()
@_study_options
@_choice_options
@click.option("--json", "as_json", is_flag=True)
def best(name: str, storage: str | None, device_key: str | None, min_accuracy: float | None,
         max_seconds: float | None, knee: bool, as_json: bool) -> None:
    """Pick one config from the front of study NAME and print it."""
    from search import metric as metrics
    from search.reviewing.choose import measured, stopping
    from search.reviewing.report import fmt_accuracy

    study, trial = _choose(name, storage, device_key, min_accuracy, max_seconds, knee)
    result, metric = trial.user_attrs.get("result", {}), metrics.of_study(study)
    out = {"study": name, "trial": trial.number, "metric": metric.name,
           "accuracy": metric.value(result.get("accuracy")),
           "test_accuracy": metric.value(result.get("test_accuracy")),
           "seconds": result.get("seconds"),
           "best_epoch": result.get("best_epoch"), "device": trial.user_attrs.get("device"),
           "params": measured(trial)}
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"trial {trial.number}: {metric.name} {out['accuracy']:.4f} "
               f"(test {fmt_accuracy(out['test_accuracy'])}) in {out['seconds']:.3f}s "
               f"({stopping(out['params'])}) "
               f"on {out['device']}")
    for key, value in out["params"].items():
        click.echo(f"  {key}: {value}")


@cli.command()
@_study_options
@_choice_options
@click.option("--trial", type=click.IntRange(min=0), default=None, help="This trial number.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The YAML file to write.")
def export(name: str, storage: str | None, device_key: str | None, min_accuracy: float | None,
           max_seconds: float | None, knee: bool, trial: int | None, output: str) -> None:
    """Export one config of study NAME as a self-describing YAML file."""
    from search.reviewing import export as exporter
    from search.reviewing.report import fmt_accuracy

    study, picked = _choose(name, storage, device_key, min_accuracy, max_seconds, knee, trial)
    record = exporter.export_record(name, picked, study.user_attrs.get("recipe") or {})
    path = exporter.write(record, output)
    measured = record["measured"]
    click.echo(f"wrote {path} (trial {picked.number}: {measured['metric']} "
               f"{measured['val_accuracy']:.4f} "
               f"(test {fmt_accuracy(measured['test_accuracy'])}) in "
               f"{measured['seconds']:.3f}s)")


@cli.command()
@_study_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="HTML (default: studies/NAME-pareto.html) or .png (needs kaleido).")
@click.option("--color-by", default=None, help="Colour points by this param, e.g. precision.")
@click.option("--log-time/--linear-time", default=None,
              help="Seconds axis scale (default: log when the times span over 30x).")
def pareto(name: str, storage: str | None, device_key: str | None, output: str | None,
           color_by: str | None, log_time: bool | None) -> None:
    """Draw the speed/accuracy front of study NAME (interactive HTML)."""
    from search import metric as metrics
    from search.reviewing import choose as chooser
    from search.reviewing import plots
    from search.tuning import floor as floors

    study = chooser.load_study(name, _storage(name, storage))
    trials = chooser.read(study)
    device, note = chooser.device_of(trials, device_key)
    if note:
        click.echo(note, err=True)
    data = plots.pareto_data(trials, device=device, color_by=color_by,
                             floor=floors.of_study(study, trials),
                             metric=metrics.of_study(study))
    verdicts = _verdicts(study, device, trials)
    fig = plots.pareto_figure(data, log_time=log_time, verdicts=verdicts,
                              title=f"{name} on {device}")
    output = output or f"studies/{name}-pareto.html"
    if output.endswith(".png"):
        plots.write_png(fig, output)
    else:
        plots.write_html(fig, output)
    click.echo(f"wrote {output}")


def _verdicts(study: Any, device: str | None, trials: Any) -> Any:
    """The stored `search verify` repeats on ``device`` as flagged verdicts, or None."""
    from search.reviewing import verify as verifier

    repeats = verifier.stored_repeats(study, device)
    trials = {t.number: t for t in trials}
    verdicts = [verifier.Verdict(n, (trials[n].values[0], trials[n].values[-1]), r)
                for n, r in repeats.items() if n in trials and len(trials[n].values) == 2]
    return verifier.flag(verdicts) if verdicts else None


@cli.command()
@_study_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="HTML file (default: studies/NAME-report.html).")
@click.option("--color-by", default=None, help="Colour the front's points by this param.")
@click.option("--log-time/--linear-time", default=None,
              help="Seconds axis scale (default: log when the times span over 30x).")
def report(name: str, storage: str | None, device_key: str | None, output: str | None,
           color_by: str | None, log_time: bool | None) -> None:
    """Write one self-contained HTML page about study NAME."""
    from search.reviewing import choose as chooser
    from search.reviewing import report_html

    study = chooser.load_study(name, _storage(name, storage))
    trials = chooser.read(study)
    device, note = chooser.device_of(trials, device_key)
    if note:
        click.echo(note, err=True)
    verdicts = _verdicts(study, device, trials)
    path = output or f"studies/{name}-report.html"
    report_html.write(study, path, device=device, verdicts=verdicts, color_by=color_by,
                      log_time=log_time, trials=trials)
    click.echo(f"wrote {path}")


@cli.command()
@_study_options
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many front configs (most accurate first).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Re-runs per config, with new seeds.")
@click.option("--device", default="auto", show_default=True)
def verify(name: str, storage: str | None, device_key: str | None, top: int, repeats: int,
           device: str) -> None:
    """Re-run the front's configs with new seeds: does the front survive the noise?"""
    from search import metric as metrics
    from search.reviewing import choose as chooser
    from search.reviewing import verify as verifier

    study = chooser.load_study(name, _storage(name, storage))
    key, note = chooser.device_of(chooser.read(study), device_key)
    if note:
        click.echo(note, err=True)
    metric = metrics.of_study(study)

    def progress(trial: int, k: int, result: Any) -> None:
        click.echo(f"  trial {trial} repeat {k}: {metric.name} "
                   f"{metric.value(result.accuracy):.4f} in {result.seconds:.3f}s", err=True)

    verdicts = verifier.verify(study, top=top, repeats=repeats, device=device, device_key=key,
                               on_run=progress)
    click.echo(f"{'trial':>5}  {metric.name + ' (mean +- std)':>24}  "
               f"{'seconds (mean +- std)':>24}  {'runs':>4}  flags")
    for v in verdicts:
        click.echo(f"{v.trial:>5}  {metric.value(v.accuracy_mean):>14.4f} +- "
                   f"{v.accuracy_std:<6.4f}  "
                   f"{v.seconds_mean:>14.3f} +- {v.seconds_std:<6.3f}  {len(v.repeats) + 1:>4}  "
                   f"{', '.join(v.flags) or 'holds'}")
    click.echo(f"repeats stored in study {name + verifier.SUFFIX!r}; "
               f"`search pareto {name}` draws them as error bars")


@cli.command()
def tricks() -> None:
    """List every config field by trick (a Markdown table: the README's)."""
    from search.training.tricks import table

    click.echo(table())


@cli.command()
@click.option("--source", default="mnist5k-0-4", show_default=True,
              help="Source task to pretrain the built-in CNN on.")
@click.option("--width", type=click.IntRange(min=1), default=None,
              help="The CNN's first-block width (default: the width the shipped study on "
                   "that source uses: 16 for mnist5k-0-4, 32 for digits-0-4).")
@click.option("--force", is_flag=True, help="Pretrain again even if cached.")
def pretrain(source: str, width: int | None, force: bool) -> None:
    """Pretrain the built-in CNN on a source task and cache the checkpoint."""
    import torch

    from search.training import pretrain as pt

    path = pt.checkpoint(source, width=width or pt.WIDTHS.get(source, 32), force=force)
    acc = torch.load(path, weights_only=True).get("val_accuracy")
    click.echo(f"{path} (source {source}, validation accuracy {acc:.4f})")


def main() -> None:
    """Entry point: click's own usage errors become one line and exit code 2 too."""
    try:
        code = cli.main(prog_name="search", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        where = f"{e.ctx.command_path}: " if getattr(e, "ctx", None) else ""
        click.echo(f"error: {where}{e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
