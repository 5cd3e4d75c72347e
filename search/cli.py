"""The `search` command: thin click commands over the library API.

Each command parses, calls one library function, prints and returns an exit code. Bad
input is one line on stderr and exit code 2. Heavy imports (torch, optuna) happen inside
commands, so ``search --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from search.errors import UserError


class _Group(click.Group):
    """Turns a UserError anywhere below into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="search")
def cli() -> None:
    """Find the PyTorch training recipe on the speed/accuracy Pareto front."""


def _parse_sets(items: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(value)
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
    from search import recipe as recipes
    from search.config import TrainConfig

    rec = recipes.load(study)
    config = TrainConfig.from_mapping({"epochs": rec.epochs, **rec.baseline},
                                      source=f"{study}: baseline")
    if config_file:
        from search.export import load_config

        config = load_config(config_file)
    overrides = _parse_sets(sets)
    for key, value in overrides.items():
        config = TrainConfig.from_mapping({key: value}, source=f"--set {key}={value}", base=config)

    from search.engine import train as run_training

    def progress(epoch: int, acc: float, loss: float, seconds: float) -> None:
        if not quiet and not as_json:
            click.echo(f"  epoch {epoch:3d}/{config.epochs}  val_acc {acc:.4f}  "
                       f"val_loss {loss:.4f}  train {seconds:7.2f}s", err=True)

    result = run_training(config, rec.data_spec(), rec.model_spec(), device=device,
                          callback=progress)
    summary = {"accuracy": result.accuracy, "seconds": result.seconds,
               "epochs": result.epochs_run, "best_epoch": result.best_epoch,
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
        click.echo(f"accuracy {result.accuracy:.4f} in {result.seconds:.2f}s "
                   f"(best epoch {result.best_epoch} of {result.epochs_run}), "
                   f"outcome {result.outcome}" + (f": {result.reason}" if result.reason else ""))
        click.echo(f"{result.samples_per_second:,.0f} samples/s, "
                   f"{result.flops_per_second / 1e9:.1f} GFLOP/s on {result.device['key']}")
    if result.outcome in ("diverged", "oom"):
        sys.exit(1)


@cli.command()
@click.argument("study", type=click.Path())
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Total finished trials the study should hold (default: the recipe's).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop starting trials after this many seconds.")
@click.option("--storage", default=None, help="SQLAlchemy URL (default: the recipe's).")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option("--sampler", default=None, help="tpe, nsga2, random, gp, qmc or grid.")
@click.option("--json", "as_json", is_flag=True, help="Print the front as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(study: str, trials: int | None, timeout: float | None, storage: str | None,
        device: str, seed: int | None, sampler: str | None, as_json: bool, quiet: bool) -> None:
    """Run (or resume) the study of a recipe file and print its Pareto front."""
    from search import recipe as recipes
    from search import report
    from search.study import mask, optimize_recipe

    rec = recipes.load(study)
    if sampler is not None and sampler not in recipes.SAMPLERS:
        raise UserError(f"--sampler: unknown sampler (valid: {', '.join(recipes.SAMPLERS)}), "
                        f"got {sampler!r}")
    summary = optimize_recipe(rec, trials=trials, timeout=timeout, storage=storage,
                              device=device, seed=seed, sampler=sampler,
                              progress=not (quiet or as_json))
    url = mask(storage or rec.storage)
    if as_json:
        click.echo(json.dumps({"study": rec.name, "storage": url, "ran": summary.ran,
                               "seconds": summary.seconds,
                               "front": report.front_rows(summary.study)}))
        return
    click.echo(report.front_table(summary.study))
    click.echo(f"ran {summary.ran} trials in {summary.seconds:.0f}s; study {rec.name!r} "
               f"stored in {url}")


@cli.command()
@click.argument("name", required=False)
@click.option("--storage", default="sqlite:///studies/digits.db", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def status(name: str | None, storage: str, as_json: bool) -> None:
    """Per study: trials by outcome, front size, best accuracy, fastest time, running now."""
    from search import report

    rows = report.status(storage, name)
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(report.status_table(rows))


@cli.command()
@click.option("--source", default="digits-0-4", show_default=True,
              help="Source task to pretrain the built-in CNN on.")
@click.option("--width", default=32, show_default=True)
@click.option("--force", is_flag=True, help="Pretrain again even if cached.")
def pretrain(source: str, width: int, force: bool) -> None:
    """Pretrain the built-in CNN on a source task and cache the checkpoint."""
    import torch

    from search import pretrain as pt

    path = pt.checkpoint(source, width=width, force=force)
    acc = torch.load(path, weights_only=True).get("val_accuracy")
    click.echo(f"{path} (source {source}, validation accuracy {acc:.4f})")


def main() -> None:
    cli(prog_name="search")
