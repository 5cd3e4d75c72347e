"""TrainConfig validation: every rejected input is one UserError naming the key and the value."""

from __future__ import annotations

import dataclasses
import re

import pytest

from search.errors import UserError
from search.training.config import TrainConfig


def _names(key: str, value: object) -> str:
    """A regex for a message that names ``key`` and then the ``value`` (its repr)."""
    return f"^{re.escape(key)}: .*{re.escape(repr(value))}$"


@pytest.mark.parametrize(("key", "value"), [
    ("lr", "fast"),
    ("lr", None),
    ("lr", True),
    ("weight_decay", [0.1]),
    ("batch_size", 2.5),
    ("batch_size", "64"),
    ("epochs", True),
    ("seed", 1.5),
    ("channels_last", "yes"),
    ("compile", 1),
    ("precision", 16),
    ("lr_schedule", None),
    ("optimizer", 3),
    ("betas", 0.9),
    ("betas", "0.9,0.99"),
])
def test_wrong_type_names_key_and_value(key: str, value: object) -> None:
    with pytest.raises(UserError, match=_names(key, value)):
        TrainConfig(**{key: value})


@pytest.mark.parametrize(("key", "value"), [
    ("lr", 0),
    ("lr", -1e-3),
    ("lr", float("inf")),
    ("lr", float("nan")),
    ("weight_decay", -0.1),
    ("warmup", 1.0),
    ("warmup", -0.1),
    ("batch_size", 0),
    ("epochs", 0),
    ("patience", -1),
    ("frozen_layers", -2),
    ("mixup_alpha", -0.2),
    ("cutmix_alpha", -1.0),
    ("label_smoothing", 1.0),
    ("dropout", 1.0),
    ("seed", -1),
    ("betas", (0.9, 1.0)),
    ("betas", (0.9, 0.99, 0.999)),
    ("precision", "fp8"),
    ("lr_schedule", "step"),
    ("lr_scaling", "sqrt"),
])
def test_out_of_range_names_key_and_value(key: str, value: object) -> None:
    with pytest.raises(UserError, match=_names(key, value)):
        TrainConfig(**{key: value})


def test_out_of_range_message_says_the_range() -> None:
    with pytest.raises(UserError, match=r"^warmup: must be in \[0, 1\), got 1\.5$"):
        TrainConfig(warmup=1.5)
    with pytest.raises(UserError, match=r"^lr: must be > 0, got 0$"):
        TrainConfig(lr=0)
    with pytest.raises(UserError, match=r"^precision: must be one of fp32, fp16, bf16, got 'fp8'$"):
        TrainConfig(precision="fp8")


def test_momentum_out_of_range_for_a_momentum_optimizer() -> None:
    with pytest.raises(UserError, match=_names("momentum", 1.0)):
        TrainConfig(optimizer="momentum", momentum=1.0)


def test_unknown_optimizer_names_value_and_valid_names() -> None:
    with pytest.raises(UserError, match=r"^optimizer: unknown optimizer \(valid: sgd, .*adamw\), "
                                        r"got 'lion'$"):
        TrainConfig(optimizer="lion")


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "adagrad", "sgd"])
def test_momentum_for_an_optimizer_without_momentum(optimizer: str) -> None:
    with pytest.raises(UserError, match=rf"^momentum: optimizer '{optimizer}' takes no momentum, "
                                        r"got 0\.9$"):
        TrainConfig(optimizer=optimizer, momentum=0.9)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "rmsprop", "adagrad"])
def test_betas_for_an_optimizer_without_betas(optimizer: str) -> None:
    with pytest.raises(UserError, match=rf"^betas: optimizer '{optimizer}' takes no betas, "
                                        r"got \[0\.9, 0\.99\]$"):
        TrainConfig(optimizer=optimizer, betas=(0.9, 0.99))


def test_unknown_key_names_the_key_and_the_valid_ones() -> None:
    with pytest.raises(UserError, match=r"^unknown key 'learning_rate' \(valid: optimizer, lr, "):
        TrainConfig.from_mapping({"learning_rate": 0.1})


def test_from_mapping_error_names_the_source() -> None:
    with pytest.raises(UserError, match=r"^recipe\.yaml: baseline: lr: must be > 0, got -1$"):
        TrainConfig.from_mapping({"lr": -1}, source="recipe.yaml: baseline")
    with pytest.raises(UserError, match=r"^recipe\.yaml: unknown key 'lrr'"):
        TrainConfig.from_mapping({"lrr": 1}, source="recipe.yaml")


def test_from_mapping_applies_on_a_base() -> None:
    base = TrainConfig(optimizer="momentum", lr=0.1, epochs=3)
    cfg = TrainConfig.from_mapping({"momentum": 0.8}, base=base)
    assert (cfg.optimizer, cfg.lr, cfg.epochs, cfg.momentum) == ("momentum", 0.1, 3, 0.8)
    with pytest.raises(UserError, match=_names("momentum", 0.8)):
        TrainConfig.from_mapping({"optimizer": "adam", "momentum": 0.8})


def test_values_are_coerced_to_their_types() -> None:
    cfg = TrainConfig(lr=1, batch_size=64.0, epochs=3.0, betas=[0.8, 0.9], weight_decay=0)
    assert isinstance(cfg.lr, float) and cfg.lr == 1.0
    assert isinstance(cfg.batch_size, int) and cfg.batch_size == 64
    assert isinstance(cfg.epochs, int) and cfg.epochs == 3
    assert cfg.betas == (0.8, 0.9)
    assert isinstance(cfg.weight_decay, float)


def test_to_dict_round_trips() -> None:
    cfg = TrainConfig(optimizer="adamw", betas=(0.85, 0.95), lr_schedule="onecycle", warmup=0.2,
                      mixup_alpha=0.2, precision="bf16", frozen_layers=2, seed=7)
    d = cfg.to_dict()
    assert d["betas"] == [0.85, 0.95]
    assert set(d) == set(TrainConfig.fields())
    assert TrainConfig.from_mapping(d) == cfg


def test_config_is_frozen_and_replace_validates() -> None:
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.5  # type: ignore[misc]
    assert cfg.replace(lr=0.5).lr == 0.5
    with pytest.raises(UserError, match=_names("lr", -0.5)):
        cfg.replace(lr=-0.5)


def test_effective_lr_follows_lr_scaling() -> None:
    from search.training.tricks.optimizer import effective_lr

    assert effective_lr(TrainConfig(lr=0.1, batch_size=512)) == 0.1
    assert effective_lr(TrainConfig(lr=0.1, batch_size=512, lr_scaling="linear")) == \
        pytest.approx(0.2)


def test_deprecated_loop_names_still_work_and_warn_once() -> None:
    """An earlier README's loop (cfg.freeze, cfg.build_mixer, cfg.mix) keeps running."""
    import warnings

    import torch

    from search.training import config as config_module

    config_module._WARNED.clear()
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
    cfg = TrainConfig(frozen_layers=1, mixup_alpha=0.4)
    with pytest.warns(FutureWarning, match=r"cfg\.freeze\(model\) is deprecated.*cfg\.prepare"):
        names = cfg.freeze(model, blocks=["0", "1"])
    assert names == ["0"]
    assert not any(p.requires_grad for p in model[0].parameters())
    assert all(p.requires_grad for p in model[1].parameters())
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    with pytest.warns(FutureWarning, match=r"cfg\.mix"):
        mixed, target = cfg.mix(x, y, 3)
    assert target.shape == (8, 3) and not torch.equal(mixed, x)  # soft targets: mixed
    with pytest.warns(FutureWarning, match=r"cfg\.build_mixer"):
        cfg.build_mixer(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second use is silent
        cfg.mix(x, y, 3)
        cfg.build_mixer(3)(x, y)
