"""Interop with plain PyTorch and plain Optuna.

PyTorch: a TrainConfig's building blocks (README "Reusing a config") give a user's own
loop what the engine trains with. The engine's own objects are recorded as it builds
them in a real (tiny) run and compared with what a user's calls build, and with values
computed here by hand.

Optuna: a study made by `search run` is an ordinary Optuna study: `optuna.load_study` and
the `optuna` command line read it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from search.cli import cli
from search.reviewing import frontier
from search.training import engine
from search.training.config import TrainConfig
from search.training.data import DataSpec
from search.training.data import load as load_data
from search.training.models import ModelSpec
from search.training.models import build as build_model
from search.tuning import floor as floors
from tests import faultmodels as fm

optuna.logging.set_verbosity(optuna.logging.WARNING)

DATA = DataSpec("digits", classes=(5, 6, 7, 8, 9))
MODEL = ModelSpec("cnn", weights="pretrained:digits-0-4")
# Every building block switched on: lr given per 256 examples, a frozen block, weight
# decay, label smoothing, mixup. 64/256 * 0.4 = 0.1 is the lr the optimizer must get.
CONFIG = TrainConfig(optimizer="nesterov", lr=0.4, lr_scaling="linear", momentum=0.8,
                     weight_decay=1e-4, batch_size=64, epochs=2, frozen_layers=1,
                     label_smoothing=0.1, mixup_alpha=0.2, lr_schedule="cosine",
                     warmup=0.2, seed=5)
EFFECTIVE_LR = 0.1
BLOCKS = ("build_optimizer", "build_scheduler", "build_criterion", "build_batch",
          "grad_scaler", "prepare")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> Any:
    return load_data(DATA)


def _record(config: TrainConfig, data: Any) -> dict[str, Any]:
    """Train ``config`` with the engine and record each building block as the engine built
    it: {name: (args, result)}, plus the optimizer's groups as built (before the scheduler
    touched them) and the lr of every optimizer step."""
    # The pretrained checkpoint is made on first use with these same building blocks:
    # make it before spying, so only the engine's own calls are recorded.
    build_model(MODEL, in_channels=data.channels, num_classes=data.num_classes)
    built: dict[str, Any] = {"lrs": []}
    originals = {name: getattr(TrainConfig, name) for name in BLOCKS}

    def spy(name: str) -> Any:
        def wrapper(self: TrainConfig, *args: Any, **kwargs: Any) -> Any:
            out = originals[name](self, *args, **kwargs)
            built[name] = (args, out)
            if name == "build_optimizer":
                built["groups"] = [_hyper(g) for g in out.param_groups]
            if name == "build_scheduler":
                step = out.step

                def recording_step(*a: Any, **k: Any) -> None:
                    built["lrs"].append(out.optimizer.param_groups[0]["lr"])
                    step(*a, **k)

                out.step = recording_step
            return out
        return wrapper

    with pytest.MonkeyPatch.context() as mp:
        for name in BLOCKS:
            mp.setattr(TrainConfig, name, spy(name))
        result = engine.train(config, data, MODEL, device="cpu", warm=False)
    assert result.outcome == "completed", result.reason
    built["result"] = result
    return built


def _hyper(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != "params"}


@pytest.fixture(scope="module")
def recorded(data: Any) -> dict[str, Any]:
    fm.one_thread()
    return _record(CONFIG, data)


def _user_model(config: TrainConfig, data: Any) -> nn.Module:
    """The model as a user builds it (examples/train_with_best.py), frozen by the config."""
    model = build_model(MODEL, in_channels=data.channels, num_classes=data.num_classes,
                        **config.model_kwargs())
    return config.prepare(model)


def _frozen(model: nn.Module) -> list[str]:
    """The model's children whose parameters are all frozen."""
    return [name for name, child in model.named_children()
            if list(child.parameters()) and not any(p.requires_grad for p in child.parameters())]


# -- optimizer -------------------------------------------------------------------------


def test_optimizer_is_the_engines_class_and_param_groups(recorded: dict[str, Any],
                                                         data: Any) -> None:
    (net,), engine_opt = recorded["build_optimizer"]
    user_opt = CONFIG.build_optimizer(_user_model(CONFIG, data))
    assert type(engine_opt) is type(user_opt) is torch.optim.SGD
    assert len(engine_opt.param_groups) == len(user_opt.param_groups) == 1
    assert recorded["groups"] == [_hyper(g) for g in user_opt.param_groups]
    group = recorded["groups"][0]
    assert group["lr"] == pytest.approx(EFFECTIVE_LR)  # effective, not the configured 0.4
    assert group["momentum"] == 0.8 and group["nesterov"] is True
    assert group["weight_decay"] == 1e-4
    shapes = [[p.shape for p in g["params"]] for g in engine_opt.param_groups]
    assert shapes == [[p.shape for p in g["params"]] for g in user_opt.param_groups]


def test_optimizer_leaves_the_frozen_parameters_out(recorded: dict[str, Any]) -> None:
    (net,), engine_opt = recorded["build_optimizer"]
    in_optimizer = {id(p) for g in engine_opt.param_groups for p in g["params"]}
    stem = {id(p) for p in net.stem.parameters()}
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert stem and stem.isdisjoint(in_optimizer)
    assert in_optimizer == trainable
    assert len(in_optimizer) < len(list(net.parameters()))


# -- freezing --------------------------------------------------------------------------


def test_freeze_freezes_the_blocks_the_engine_froze(recorded: dict[str, Any],
                                                    data: Any) -> None:
    (net,), _ = recorded["prepare"]
    model = build_model(MODEL, in_channels=data.channels, num_classes=data.num_classes)
    assert CONFIG.prepare(model) is model
    assert _frozen(model) == _frozen(net) == ["stem"]
    assert isinstance(net.stem[1], FrozenBatchNorm2d)
    assert isinstance(model.stem[1], FrozenBatchNorm2d)


def test_freeze_with_an_explicit_block_list_for_a_users_sequential() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    cfg = TrainConfig(frozen_layers=2)
    cfg.prepare(model, blocks=["0", ["1", "2"], ["3", "4", "5"], "7"])
    assert _frozen(model) == ["0"]  # and model[1] became a FrozenBatchNorm2d (no parameters)
    assert not any(p.requires_grad for p in model[0].parameters())
    assert isinstance(model[1], FrozenBatchNorm2d)  # keeps its statistics in train()
    for index in (3, 4, 7):
        assert all(p.requires_grad for p in model[index].parameters()), index
    assert isinstance(model[4], nn.BatchNorm2d)
    in_optimizer = {id(p) for g in cfg.build_optimizer(model).param_groups
                    for p in g["params"]}
    assert in_optimizer == {id(p) for i in (3, 4, 7) for p in model[i].parameters()}
    x = torch.randn(2, 1, 8, 8)
    model(x).sum().backward()
    assert model[0].weight.grad is None and model[3].weight.grad is not None


def test_freeze_zero_blocks_freezes_nothing() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    TrainConfig().prepare(model, blocks=["0", "1"])
    assert all(p.requires_grad for p in model.parameters())


# -- lr schedule -------------------------------------------------------------------------


def _user_lrs(config: TrainConfig, steps_per_epoch: int, steps: int) -> list[float]:
    optimizer = config.build_optimizer(nn.Linear(2, 2))
    scheduler = config.build_scheduler(optimizer, steps_per_epoch)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return EFFECTIVE_LR * (step + 1) / warmup
    return EFFECTIVE_LR * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_schedule_gives_the_engines_lr_at_every_step(recorded: dict[str, Any],
                                                     data: Any) -> None:
    (_, steps_per_epoch), _ = recorded["build_scheduler"]
    assert steps_per_epoch == -(-data.train_size // CONFIG.batch_size)  # the last one partial
    engine_lrs = recorded["lrs"]
    total = CONFIG.epochs * steps_per_epoch
    assert len(engine_lrs) == total  # stepped once per batch, over the whole schedule
    assert _user_lrs(CONFIG, steps_per_epoch, total) == pytest.approx(engine_lrs)
    warmup = round(CONFIG.warmup * total)
    assert engine_lrs == pytest.approx([_cosine(s, total, warmup) for s in range(total)])


@pytest.mark.parametrize(("schedule", "warmup"), [("constant", 0.25), ("onecycle", 0.3)])
def test_other_schedules_match_the_engine_too(data: Any, schedule: str, warmup: float) -> None:
    config = TrainConfig(lr=0.05, batch_size=128, epochs=1, lr_schedule=schedule,
                         warmup=warmup)
    built = _record(config, data)
    (_, steps_per_epoch), _ = built["build_scheduler"]
    total = config.epochs * steps_per_epoch
    assert len(built["lrs"]) == total
    assert _user_lrs(config, steps_per_epoch, total) == pytest.approx(built["lrs"])
    if schedule == "onecycle":
        reference = torch.optim.lr_scheduler.OneCycleLR(
            torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=0.05), max_lr=0.05,
            total_steps=total, pct_start=warmup, cycle_momentum=False)
        expected = []
        for _ in range(total):
            expected.append(reference.get_last_lr()[0])
            reference.optimizer.step()
            reference.step()
        assert built["lrs"] == pytest.approx(expected)
    else:
        ramp = round(warmup * total)
        assert built["lrs"] == pytest.approx(
            [0.05 * min(1.0, (s + 1) / ramp) for s in range(total)])


# -- loss, mixing, precision -------------------------------------------------------------


def test_criterion_gives_the_engines_loss(recorded: dict[str, Any]) -> None:
    _, engine_criterion = recorded["build_criterion"]
    user_criterion = CONFIG.build_criterion()
    logits = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    hard = torch.arange(16) % 5
    soft = torch.softmax(torch.randn(16, 5, generator=torch.Generator().manual_seed(1)), 1)
    for target in (hard, soft):
        expected = nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
        assert engine_criterion(logits, target) == pytest.approx(expected.item())
        assert user_criterion(logits, target) == pytest.approx(expected.item())
    plain = nn.functional.cross_entropy(logits, hard)
    assert user_criterion(logits, hard).item() != pytest.approx(plain.item())


def test_mixer_mixes_as_the_engines_does(recorded: dict[str, Any], data: Any) -> None:
    (num_classes,), engine_mix = recorded["build_batch"]
    assert num_classes == data.num_classes
    x, y = (t[:32] for t in data.tensors["train"])
    torch.manual_seed(7)
    engine_x, engine_t = engine_mix(x, y)
    torch.manual_seed(7)
    user_x, user_t = CONFIG.build_batch(num_classes)(x, y)
    assert torch.equal(engine_x, user_x) and torch.equal(engine_t, user_t)
    assert not torch.equal(user_x, x)  # mixup is on: the images changed


def test_mix_returns_soft_targets_summing_to_one(data: Any) -> None:
    x, y = (t[:32] for t in data.tensors["train"])
    for cfg in (CONFIG, CONFIG.replace(mixup_alpha=0.0, cutmix_alpha=1.0),
                CONFIG.replace(cutmix_alpha=0.5)):
        mixed, target = cfg.build_batch(data.num_classes)(x, y)
        assert mixed.shape == x.shape
        assert target.shape == (32, data.num_classes)
        assert target.dtype.is_floating_point and (target >= 0).all()
        assert target.sum(1) == pytest.approx(torch.ones(32))
        # One blend per batch: lam of the own label, 1 - lam of the partner's (the batch
        # rolled by one, as torchvision pairs them).
        onehot = nn.functional.one_hot(y, data.num_classes).float()
        partner = onehot.roll(1, 0)
        row = int((y != y.roll(1)).nonzero()[0])
        lam = target[row, y[row]].item()
        assert target == pytest.approx(lam * onehot + (1 - lam) * partner, abs=1e-6)


def test_autocast_bf16_on_cpu_gives_bf16_outputs() -> None:
    layer = nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with TrainConfig(precision="bf16").autocast("cpu"):
        assert layer(x).dtype == torch.bfloat16
    with TrainConfig(precision="fp32").autocast("cpu"):
        assert layer(x).dtype == torch.float32
    with TrainConfig(precision="bf16").autocast(torch.device("cpu")):
        assert layer(x).dtype == torch.bfloat16


@pytest.mark.parametrize(("precision", "enabled"),
                         [("fp16", True), ("bf16", False), ("fp32", False)])
def test_grad_scaler_is_enabled_for_fp16_only(precision: str, enabled: bool) -> None:
    assert TrainConfig(precision=precision).grad_scaler("cpu").is_enabled() is enabled


def test_the_engines_scaler_is_the_configs(recorded: dict[str, Any]) -> None:
    (device,), scaler = recorded["grad_scaler"]
    assert torch.device(device).type == "cpu"
    assert not scaler.is_enabled()  # fp32


# -- Optuna --------------------------------------------------------------------------------


SPACE = ("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
         "batch_size: {choices: [64, 128]}\n"
         "frozen_layers: {low: 0, high: max}\n")


@pytest.fixture(scope="module")
def run_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`search run` of a 3-trial, 2-epoch recipe; the study's storage URL."""
    fm.one_thread()
    folder = tmp_path_factory.mktemp("interop")
    recipe = fm.write_recipe(folder, SPACE, trials=3, pruner="pareto-sha")
    url = f"sqlite:///{folder / 'tiny.db'}"
    result = CliRunner().invoke(cli, ["run", str(recipe), "--quiet", "--device", "cpu",
                                      "--storage", url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    yield url


def test_optuna_load_study_reads_a_search_study(run_study: str) -> None:
    study = optuna.load_study(study_name="tiny", storage=run_study)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 3
    recipe = study.user_attrs["recipe"]
    assert recipe["name"] == "tiny" and recipe["data"]["classes"] == [5, 6, 7, 8, 9]
    assert recipe["model"]["name"] == "cnn"
    assert recipe["model"]["weights"] == "pretrained:digits-0-4"
    assert recipe["space"] == SPACE and recipe["epochs"] == 2
    assert study.user_attrs["recipe_hash"]
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            acc, sec = t.values
            assert 0.0 <= acc <= 1.0 and sec > 0
            assert TrainConfig.from_mapping(t.user_attrs["config"]).epochs == 2
            assert t.user_attrs["result"]["accuracy"] == acc
            assert t.user_attrs["outcome"] in ("completed", "early-stopped", "pruned")
            assert isinstance(t.user_attrs["device"], str)


def test_optuna_cli_lists_the_best_trials(run_study: str) -> None:
    optuna_cli = Path(sys.executable).parent / "optuna"
    proc = subprocess.run([str(optuna_cli), "best-trials", "--study-name", "tiny",
                           "--storage", run_study, "--format", "json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    listed = {row["number"] for row in json.loads(proc.stdout)}
    study = optuna.load_study(study_name="tiny", storage=run_study)
    assert listed == {t.number for t in study.best_trials}
    # Optuna's front leaves out what the floor constraint marks infeasible; so does ours.
    trials = study.get_trials(deepcopy=False)
    floor = floors.of_study(study, trials)
    front = frontier.pareto_front(frontier.points(trials, floor=floor))
    assert listed == {p.number for p in front}
