"""Search spaces: YAML -> validated dimensions -> Optuna suggestions -> TrainConfig."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search.errors import UserError
from search.training.config import TrainConfig
from search.training.trick import Context
from search.tuning import space as spaces

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]
CNN_BLOCKS = 3  # the built-in CNN: stem, layer1, layer2


def write_space(tmp_path: Path, spec: dict[str, Any], name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def sample(space: spaces.Space, base: TrainConfig, n: int, seed: int = 0
           ) -> list[tuple[optuna.trial.FrozenTrial, TrainConfig]]:
    """``n`` configurations from the random sampler, with the trials that chose them."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append(space.suggest(trial, base))
        study.tell(trial, 0.0)
    return list(zip(study.trials, configs, strict=True))


# --- every dimension kind -------------------------------------------------------------------

ALL_KINDS = {
    "optimizer": {"choices": ["momentum", "adam"]},
    "lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True},
    "momentum": {"low": 0.8, "high": 0.95, "when": {"optimizer": "momentum"}},
    "warmup": {"low": 0.0, "high": 0.3, "step": 0.1},
    "batch_size": {"low": 32, "high": 128, "step": 32},
    "epochs": {"low": 2, "high": 4},
    "frozen_layers": {"low": 0, "high": "max"},
    "mixup_alpha": {"low": 0.1, "high": 0.8, "optional": True},
    "precision": "bf16",
    "channels_last": {"value": True},
}


@pytest.fixture(scope="module")
def all_kinds(tmp_path_factory: pytest.TempPathFactory) -> spaces.Space:
    path = write_space(tmp_path_factory.mktemp("space"), ALL_KINDS)
    return spaces.load(path, max_blocks=CNN_BLOCKS)


def test_dimension_kinds_are_parsed(all_kinds: spaces.Space) -> None:
    dims = {d.name: d for d in all_kinds.dimensions}
    assert all_kinds.names == tuple(ALL_KINDS)
    assert dims["optimizer"].kind == "categorical"
    assert dims["lr"].kind == "float" and dims["lr"].log
    assert dims["warmup"].kind == "float" and dims["warmup"].step == 0.1
    assert dims["batch_size"].kind == "int" and dims["batch_size"].step == 32
    assert dims["epochs"].kind == "int" and (dims["epochs"].low, dims["epochs"].high) == (2, 4)
    assert dims["frozen_layers"].high == CNN_BLOCKS  # high: max, resolved
    assert dims["precision"].kind == "fixed" and dims["precision"].value == "bf16"
    assert dims["channels_last"].kind == "fixed" and dims["channels_last"].value is True
    assert dims["momentum"].when == (("optimizer", ("momentum",)),)
    assert dims["mixup_alpha"].optional


def test_suggestions_use_the_right_distributions(all_kinds: spaces.Space) -> None:
    trial, _ = sample(all_kinds, TrainConfig(), 1)[0]
    dist = trial.distributions
    assert dist["optimizer"] == CategoricalDistribution(["momentum", "adam"])
    assert dist["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert dist["warmup"] == FloatDistribution(0.0, 0.3, step=0.1)
    assert dist["batch_size"] == IntDistribution(32, 128, step=32)
    assert dist["epochs"] == IntDistribution(2, 4)
    assert dist["frozen_layers"] == IntDistribution(0, CNN_BLOCKS)
    assert dist["use_mixup_alpha"] == CategoricalDistribution([False, True])
    # Fixed values are not searched: no Optuna param.
    assert "precision" not in dist and "channels_last" not in dist


def test_suggested_configs_stay_in_the_space(all_kinds: spaces.Space) -> None:
    base = TrainConfig(mixup_alpha=0.0, epochs=3)
    for trial, config in sample(all_kinds, base, 40):
        assert config.optimizer in ("momentum", "adam")
        assert 1e-4 <= config.lr <= 1e-1
        assert any(config.warmup == pytest.approx(w) for w in (0.0, 0.1, 0.2, 0.3))
        assert config.batch_size in (32, 64, 96, 128)
        assert 2 <= config.epochs <= 4
        assert 0 <= config.frozen_layers <= CNN_BLOCKS
        assert config.precision == "bf16" and config.channels_last is True
        assert dict(trial.params)["lr"] == config.lr  # params read as the config


def test_when_samples_a_dimension_only_if_its_condition_holds(all_kinds: spaces.Space) -> None:
    seen = set()
    for trial, config in sample(all_kinds, TrainConfig(), 30):
        seen.add(config.optimizer)
        if config.optimizer == "momentum":
            assert 0.8 <= trial.params["momentum"] <= 0.95
            assert config.momentum == trial.params["momentum"]
        else:
            assert "momentum" not in trial.params
            assert config.momentum is None  # the baseline's value
    assert seen == {"momentum", "adam"}


def test_when_can_depend_on_a_fixed_value(tmp_path: Path) -> None:
    path = write_space(tmp_path, {"optimizer": "momentum",
                                  "momentum": {"low": 0.8, "high": 0.9,
                                               "when": {"optimizer": ["momentum"]}}})
    space = spaces.load(path)
    trial, config = sample(space, TrainConfig(optimizer="adam"), 1)[0]
    assert "momentum" in trial.params
    assert config.optimizer == "momentum" and 0.8 <= config.momentum <= 0.9


def test_optional_adds_a_use_flag_and_keeps_the_baseline_when_off(
        all_kinds: spaces.Space) -> None:
    flags = set()
    for trial, config in sample(all_kinds, TrainConfig(mixup_alpha=0.0), 30):
        use = trial.params["use_mixup_alpha"]
        flags.add(use)
        if use:
            assert 0.1 <= trial.params["mixup_alpha"] <= 0.8
            assert config.mixup_alpha == trial.params["mixup_alpha"]
        else:
            assert "mixup_alpha" not in trial.params
            assert config.mixup_alpha == 0.0
    assert flags == {False, True}


def test_betas_choices_round_trip_through_optuna_scalars(tmp_path: Path) -> None:
    path = write_space(tmp_path, {"betas": {"choices": [[0.9, 0.999], [0.8, 0.99]]}})
    space = spaces.load(path)
    got = {config.betas for _, config in sample(space, TrainConfig(optimizer="adam"), 20)}
    assert got == {(0.9, 0.999), (0.8, 0.99)}


def test_high_max_resolves_to_the_models_block_count(tmp_path: Path) -> None:
    path = write_space(tmp_path, {"frozen_layers": {"low": 0, "high": "max"}})
    for blocks in (1, 3, 5):
        dim = spaces.load(path, max_blocks=blocks).dimensions[0]
        assert (dim.low, dim.high, dim.kind) == (0, blocks, "int")


def test_high_max_for_the_cnn_comes_from_the_model() -> None:
    from search.training import models

    blocks = models.count_blocks(models.ModelSpec("cnn"), in_channels=1, num_classes=5)
    space = spaces.load(ROOT / "spaces" / "default.yaml", max_blocks=blocks)
    assert blocks == CNN_BLOCKS
    assert {d.name: d for d in space.dimensions}["frozen_layers"].high == blocks


# --- params_of ------------------------------------------------------------------------------

def enqueue_and_suggest(space: spaces.Space, config: TrainConfig, base: TrainConfig
                        ) -> TrainConfig:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(space.params_of(config))
    return space.suggest(study.ask(), base)


def test_params_of_round_trips_a_baseline_inside_the_space(all_kinds: spaces.Space) -> None:
    baseline = TrainConfig(optimizer="momentum", lr=0.01, momentum=0.9, warmup=0.2,
                           batch_size=64, epochs=3, frozen_layers=2, mixup_alpha=0.4,
                           precision="bf16", channels_last=True)
    params = all_kinds.params_of(baseline)
    assert params == {"optimizer": "momentum", "lr": 0.01, "momentum": 0.9, "warmup": 0.2,
                      "batch_size": 64, "epochs": 3, "frozen_layers": 2,
                      "use_mixup_alpha": True, "mixup_alpha": 0.4}
    assert enqueue_and_suggest(all_kinds, baseline, base=baseline) == baseline


def test_params_of_switches_an_optional_trick_off_at_its_off_value(
        all_kinds: spaces.Space) -> None:
    baseline = TrainConfig(optimizer="adam", lr=0.001, batch_size=64, epochs=2,
                           precision="bf16", channels_last=True)
    params = all_kinds.params_of(baseline)
    assert params["use_mixup_alpha"] is False and "mixup_alpha" not in params
    assert "momentum" not in params  # its condition (optimizer momentum) does not hold
    assert enqueue_and_suggest(all_kinds, baseline, base=baseline) == baseline


def test_params_of_leaves_out_values_outside_a_range(all_kinds: spaces.Space) -> None:
    params = all_kinds.params_of(TrainConfig(lr=0.5, batch_size=16))
    assert "lr" not in params and "batch_size" not in params


def test_params_of_round_trips_the_shipped_digits_baseline_on_the_tricks_space() -> None:
    space = spaces.load(ROOT / "spaces" / "tricks.yaml", max_blocks=CNN_BLOCKS)
    baseline = TrainConfig(optimizer="adam", lr=0.001, batch_size=64, epochs=10)
    assert enqueue_and_suggest(space, baseline, base=baseline) == baseline


def test_params_of_a_conditional_range_whose_baseline_is_the_default(tmp_path: Path) -> None:
    # momentum=None means the optimizer's default (0.9 for `momentum`): it is enqueued as
    # that value when the range holds it, rather than crashing on `low <= None`.
    space = spaces.parse({"optimizer": {"choices": ["momentum", "adam"]},
                          "momentum": {"low": 0.8, "high": 0.95,
                                       "when": {"optimizer": "momentum"}}}, source="x.yaml")
    params = space.params_of(TrainConfig(optimizer="momentum"))
    assert params == {"optimizer": "momentum", "momentum": 0.9}


def test_switching_optimizer_drops_the_baselines_momentum() -> None:
    # Fixed bug (space.py, Space.suggest): a baseline with momentum set and a space that
    # samples an optimizer without momentum (adam) builds TrainConfig(optimizer=adam,
    # momentum=0.9), which raises UserError inside the trial and stops the study.
    space = spaces.load(ROOT / "spaces" / "default.yaml", max_blocks=CNN_BLOCKS)
    base = TrainConfig(optimizer="momentum", momentum=0.9)
    for _, config in sample(space, base, 20):
        if config.optimizer not in ("momentum", "nesterov"):
            assert config.momentum is None


# --- grid -----------------------------------------------------------------------------------

def test_grid_lists_choices_stepped_ranges_ints_and_fixed_values() -> None:
    space = spaces.parse({"batch_size": {"choices": [32, 64]},
                          "warmup": {"low": 0.0, "high": 0.2, "step": 0.1},
                          "frozen_layers": {"low": 0, "high": "max"},
                          "epochs": {"low": 2, "high": 6, "step": 2},
                          "precision": "fp32"}, source="x.yaml", max_blocks=2)
    assert space.grid() == {"batch_size": [32, 64], "warmup": [0.0, 0.1, 0.2],
                            "frozen_layers": [0, 1, 2], "epochs": [2, 4, 6],
                            "precision": ["fp32"]}


@pytest.mark.parametrize("spec, match", [
    ({"warmup": {"low": 0.0, "high": 0.3}}, r"^x\.yaml: warmup: the grid sampler needs "
                                              r"choices or a step"),
    ({"lr": {"low": 1e-3, "high": 1e-1, "log": True}}, r"^x\.yaml: lr: .*needs choices or a step"),
    ({"optimizer": {"choices": ["momentum", "adam"]},
      "momentum": {"low": 0.8, "high": 0.9, "step": 0.1, "when": {"optimizer": "momentum"}}},
     r"^x\.yaml: momentum: the grid sampler takes no conditional dimensions"),
    ({"mixup_alpha": {"choices": [0.2, 0.4], "optional": True}},
     r"^x\.yaml: mixup_alpha: the grid sampler takes no conditional dimensions"),
])
def test_grid_refuses_conditional_and_unstepped_float_dimensions(
        tmp_path: Path, spec: dict[str, Any], match: str) -> None:
    space = spaces.parse(spec, source="x.yaml", path=Path("x.yaml"))
    with pytest.raises(UserError, match=match):
        space.grid()


@pytest.mark.parametrize("spec", [
    {"warmup": {"low": 0.0, "high": 0.9, "step": 0.6}},
    {"batch_size": {"low": 32, "high": 90, "step": 32}},
])
def test_grid_stays_within_low_and_high(spec: dict[str, Any]) -> None:
    # Fixed bug (space.py, Space.grid): the number of steps is round((high - low) / step),
    # so a range whose length is not a multiple of the step gets a point past `high`
    # (warmup 1.2, an invalid config; batch_size 96 > 90). Optuna's own stepped
    # distributions stop at the last multiple at or below high: use math.floor.
    (name, dim), = spec.items()
    values = spaces.parse(spec, source="x.yaml").grid()[name]
    assert values and all(dim["low"] <= v <= dim["high"] for v in values)


# --- validation errors: file, key, value ----------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ({"lr": {"low": -1, "high": 0.1}}, "lr.low: must be > 0, got -1"),
    ({"weight_decay": {"low": -0.5, "high": 0.1}}, "weight_decay.low: must be >= 0, got -0.5"),
    ({"lr": {"low": 0.1, "high": 0.01}}, "lr: low must be < high, got low=0.1, high=0.01"),
    ({"epochs": {"low": 4, "high": 4}}, "epochs: low must be < high, got low=4, high=4"),
    ({"weight_decay": {"low": 0, "high": 0.01, "log": True}},
     "weight_decay.low: must be > 0 on a log scale, got 0.0"),
    ({"label_smoothing": {"low": 0.0, "high": 0.2, "log": True}},
     "label_smoothing.low: must be > 0 on a log scale, got 0.0"),
    ({"learning_rate": {"low": 0.001, "high": 0.1}}, "learning_rate: unknown field (valid: "),
    ({"lr": {"low": 0.001, "hi": 0.1}}, "lr.hi: unknown key (valid: "),
    ({"batch_size": {"choices": [32, "big"]}},
     "batch_size.choices: must be an integer, got 'big'"),
    ({"epochs": {"low": 2.5, "high": 4}}, "epochs.low: must be an integer, got 2.5"),
    ({"lr": {"low": 0.001, "high": 0.1, "log": "yes"}},
     "lr.log: must be true or false, got 'yes'"),
    ({"mixup_alpha": {"low": 0.1, "high": 0.5, "optional": 1}},
     "mixup_alpha.optional: must be true or false, got 1"),
    ({"channels_last": "yes"}, "channels_last.value: must be true or false, got 'yes'"),
    ({"optimizer": {"choices": ["adam", "foo"]}},
     "optimizer.choices: unknown optimizer (valid: "),
    ({"precision": {"choices": ["fp32", "fp8"]}},
     "precision.choices: must be one of fp32, fp16, bf16, got 'fp8'"),
    ({"optimizer": {"low": 1, "high": 2}},
     "optimizer.low: this field takes choices or a value, not a range, got 1"),
    ({"batch_size": {"choices": []}}, "batch_size.choices: must be a non-empty list, got []"),
    ({"lr": {"high": 0.1}}, "lr.low: a range needs low and high, got None"),
    ({"lr": {"low": 0.1}}, "lr.high: a range needs low and high, got None"),
    ({"lr": {"low": 0.001, "high": 0.1, "choices": [0.01]}},
     "lr: give exactly one of choices, low/high, or value"),
    ({"warmup": {"low": 0.0, "high": 0.3, "step": 0}}, "warmup.step: must be a number > 0, got 0"),
    ({"lr": {"low": 0.001, "high": 0.1, "log": True, "step": 0.01}},
     "lr.step: cannot be combined with log, got 0.01"),
    ({"optimizer": {"choices": ["adam"]},
      "momentum": {"low": 0.8, "high": 0.9, "when": {"optimiser": "momentum"}}},
     "momentum.when.optimiser: unknown field, got 'optimiser'"),
    ({"momentum": {"low": 0.8, "high": 0.9, "when": {"optimizer": ["momentum"]}},
      "optimizer": {"choices": ["momentum", "adam"]}},
     "momentum.when.optimizer: must refer to a dimension listed earlier, got 'optimizer'"),
    ({"momentum": {"low": 0.8, "high": 0.9, "when": ["optimizer"]}},
     "momentum.when: must be a mapping of field: value(s), got ['optimizer']"),
    ({"frozen_layers": {"low": 0, "high": 5}}, "frozen_layers.high: the model has 3 blocks, got 5"),
])
def test_invalid_space_names_file_key_and_value(tmp_path: Path, spec: dict[str, Any],
                                                message: str) -> None:
    path = write_space(tmp_path, spec)
    with pytest.raises(UserError) as info:
        spaces.load(path, max_blocks=CNN_BLOCKS)
    text = str(info.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text


def test_high_max_without_a_block_count_is_an_error(tmp_path: Path) -> None:
    path = write_space(tmp_path, {"frozen_layers": {"low": 0, "high": "max"}})
    with pytest.raises(UserError, match=re.escape(
            f"{path}: frozen_layers.high: max needs the model's block count, got 'max'")):
        spaces.load(path)


def test_high_max_is_only_for_frozen_layers(tmp_path: Path) -> None:
    path = write_space(tmp_path, {"epochs": {"low": 1, "high": "max"}})
    with pytest.raises(UserError, match=re.escape(f"{path}: epochs.high: ")):
        spaces.load(path, max_blocks=CNN_BLOCKS)


@pytest.mark.parametrize("spec", [
    {"frozen_layers": {"choices": [0, 7]}},
    {"frozen_layers": 7},
])
def test_frozen_layers_choices_and_values_above_the_models_blocks_are_refused(
        tmp_path: Path, spec: dict[str, Any]) -> None:
    # Fixed bug (search/tuning/space.py, _dimension): only a range's `high` is checked against the
    # model's blocks; choices and fixed values pass and the study stops at training time.
    path = write_space(tmp_path, spec)
    with pytest.raises(UserError, match=re.escape(f"{path}: frozen_layers")):
        spaces.load(path, max_blocks=CNN_BLOCKS)


def test_an_integer_field_refuses_a_fractional_step(tmp_path: Path) -> None:
    # Fixed bug (space.py, _dimension): batch_size step 0.5 is accepted; _suggest passes
    # int(0.5) == 0 to suggest_int, whose ValueError stops the study.
    path = write_space(tmp_path, {"batch_size": {"low": 32, "high": 128, "step": 0.5}})
    with pytest.raises(UserError, match=re.escape(f"{path}: batch_size.step: ")):
        spaces.load(path, max_blocks=CNN_BLOCKS)


def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- lr\n- batch_size\n", encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(f"{path}: expected a mapping")):
        spaces.load(path)


# --- the shipped spaces ---------------------------------------------------------------------

def test_shipped_default_space_parses_and_searches_every_main_choice() -> None:
    space = spaces.load(ROOT / "spaces" / "default.yaml", max_blocks=CNN_BLOCKS)
    for name in ("optimizer", "lr", "batch_size", "frozen_layers", "mixup_alpha",
                 "label_smoothing", "precision", "lr_schedule", "weight_decay"):
        assert name in space.names
    dims = {d.name: d for d in space.dimensions}
    assert dims["lr"].log and dims["frozen_layers"].high == CNN_BLOCKS


def test_shipped_tricks_space_keeps_optimizer_and_lr_at_the_baseline() -> None:
    space = spaces.load(ROOT / "spaces" / "tricks.yaml", max_blocks=CNN_BLOCKS)
    assert "optimizer" not in space.names and "lr" not in space.names
    assert "frozen_layers" in space.names


def test_shipped_gpu_space_parses_for_a_five_block_model() -> None:
    space = spaces.load(ROOT / "spaces" / "gpu.yaml", max_blocks=5)
    dims = {d.name: d for d in space.dimensions}
    assert dims["frozen_layers"].high == 5
    assert set(dims["precision"].choices) == {"fp32", "fp16", "bf16"}


@pytest.mark.parametrize("name", ["default.yaml", "tricks.yaml", "gpu.yaml", "gpu-scratch.yaml"])
def test_shipped_spaces_sample_valid_configs(name: str) -> None:
    space = spaces.load(ROOT / "spaces" / name, max_blocks=5)
    for _, config in sample(space, TrainConfig(), 15):
        assert isinstance(config, TrainConfig)
        assert math.isfinite(config.lr) and 0 <= config.frozen_layers <= 5


# --- probes -----------------------------------------------------------------------------


def test_probes_apply_one_speed_trick_each_to_the_baseline() -> None:
    space = spaces.load(ROOT / "spaces" / "default.yaml", max_blocks=CNN_BLOCKS)
    base = TrainConfig(optimizer="adam", lr=0.001, batch_size=64, epochs=10)
    probes = space.probes(base, Context(pretrained=True, blocks=CNN_BLOCKS))
    assert [label for label, _ in probes] == ["batch_size=128", "epochs=5", "frozen_layers=1",
                                             "precision=bf16"]
    baseline = space.params_of(base)
    for label, params in probes:
        name, value = label.split("=")
        changed = {k for k in params if params[k] != baseline.get(k)}
        assert changed == {name}, label  # one trick, nothing else moves
        probe = space.suggest(_enqueued(params), base)
        assert str(getattr(probe, name)) == value
        assert probe.replace(**{name: getattr(base, name)}, betas=None) == base
    # Without pretrained weights there is nothing to freeze; the tricks' own baseline
    # values are no probes.
    assert "frozen_layers=1" not in dict(space.probes(base, Context(pretrained=False)))
    assert [label for label, _ in space.probes(
        base.replace(precision="bf16", batch_size=512, epochs=1), Context())] == []


def _enqueued(params: dict[str, Any]) -> optuna.trial.Trial:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(params)
    return study.ask()
