"""The training engine: every trick through a real run, and every way a run can end."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from search.errors import UserError
from search.outcomes import TRAINING_OUTCOMES as OUTCOMES
from search.training.config import TrainConfig
from search.training.engine import TrainResult, train
from search.training.models import ModelSpec
from search.training.tricks import optimizer as optimizers
from tests.usermodels import PRETRAINED, small_data

CNN = ModelSpec("cnn", weights=PRETRAINED)
DEVICE_KEYS = {"device_type", "device_name", "cpu", "threads", "torch", "cuda", "key"}
CURVE_KEYS = {"epoch", "seconds", "accuracy", "loss"}

_LR = {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.02}


def _cases() -> list[Any]:
    cases = [pytest.param({"optimizer": name, "lr": _LR.get(name, 1e-3)}, id=f"optimizer-{name}")
             for name in optimizers.OPTIMIZERS]
    cases += [pytest.param({"lr_schedule": s, "warmup": 0.2}, id=f"schedule-{s}-warmup")
              for s in ("constant", "cosine", "onecycle")]
    cases += [pytest.param(kw, id=name) for name, kw in {
        "lr-scaling-linear": {"lr_scaling": "linear", "lr": 4e-3},
        "frozen-1": {"frozen_layers": 1},
        "frozen-3": {"frozen_layers": 3, "lr": 1e-2, "batch_size": 16},  # a linear probe
        "mixup": {"mixup_alpha": 0.4},
        "cutmix": {"cutmix_alpha": 1.0},
        "mixup-and-cutmix": {"mixup_alpha": 0.4, "cutmix_alpha": 1.0},
        "label-smoothing": {"label_smoothing": 0.1},
        "fp16": {"precision": "fp16", "batch_size": 64},  # slow on CPU: 2 steps an epoch
        "bf16": {"precision": "bf16", "batch_size": 64},
        "channels-last": {"channels_last": True},
        "dropout": {"dropout": 0.3},
        "patience": {"patience": 1, "epochs": 3},
        "weight-decay": {"optimizer": "adamw", "weight_decay": 0.05},
        "everything": {"optimizer": "nesterov", "lr": 0.02, "lr_schedule": "onecycle",
                       "warmup": 0.3, "frozen_layers": 1, "mixup_alpha": 0.2,
                       "label_smoothing": 0.1, "precision": "bf16", "channels_last": True,
                       "dropout": 0.1},
    }.items()]
    return cases


@pytest.mark.parametrize("changes", _cases())
def test_every_trick_trains(changes: dict[str, Any]) -> None:
    # 160 training examples, 5 steps an epoch: enough to learn, short on a CPU.
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 32, **changes})
    result = train(cfg, small_data(), CNN, device="cpu")

    assert isinstance(result, TrainResult)
    assert result.outcome in ("completed", "early-stopped"), result.reason
    assert result.outcome in OUTCOMES
    assert (result.reason == "") == (result.outcome == "completed")
    assert 1 <= result.epochs_run <= cfg.epochs
    if result.outcome == "completed":
        assert result.epochs_run == cfg.epochs
    assert len(result.curve) == result.epochs_run
    assert [p["epoch"] for p in result.curve] == list(range(1, result.epochs_run + 1))
    for point in result.curve:
        assert set(point) == CURVE_KEYS
        assert all(math.isfinite(v) for v in point.values())
    assert math.isfinite(result.accuracy) and 0.0 <= result.accuracy <= 1.0
    assert result.accuracy == max(p["accuracy"] for p in result.curve)
    assert result.accuracy > 0.4, "a pretrained backbone learns in 10 steps (chance: 0.2)"
    assert result.curve[result.best_epoch - 1]["accuracy"] == result.accuracy
    assert result.seconds == result.curve[result.best_epoch - 1]["seconds"]
    assert 0 < result.seconds <= result.train_seconds
    assert result.final_accuracy == result.curve[-1]["accuracy"]
    assert result.eval_seconds > 0 and result.samples_per_second > 0
    assert result.flops_per_sample > 0 and result.flops_per_second > 0
    assert DEVICE_KEYS <= set(result.device)
    assert result.device["device_type"] == "cpu" and result.device["key"].startswith("cpu:")
    assert result.config == cfg.to_dict()
    assert set(result.to_dict()) >= {"outcome", "accuracy", "seconds", "curve", "device"}


def test_patience_stops_a_run_that_cannot_improve() -> None:
    # Everything but the head frozen and a vanishing lr: accuracy cannot move.
    cfg = TrainConfig(optimizer="sgd", lr=1e-12, frozen_layers=3, patience=1, epochs=4)
    result = train(cfg, small_data(), CNN, device="cpu")
    assert result.outcome == "early-stopped"
    assert result.epochs_run == 2 < cfg.epochs
    assert result.best_epoch == 1
    assert "1 epochs" in result.reason
    assert result.curve[0]["accuracy"] == result.curve[1]["accuracy"]


def test_no_patience_runs_every_epoch() -> None:
    cfg = TrainConfig(optimizer="sgd", lr=1e-12, frozen_layers=3, epochs=3)
    result = train(cfg, small_data(), CNN, device="cpu")
    assert result.outcome == "completed" and result.epochs_run == 3


def _metrics(result: TrainResult) -> list[tuple[float, float]]:
    return [(p["accuracy"], p["loss"]) for p in result.curve]


def test_same_seed_gives_identical_metrics_and_a_different_seed_differs() -> None:
    # Mixup and dropout draw from the global RNG, shuffling from the seeded generator.
    base = TrainConfig(epochs=2, batch_size=32, seed=3, mixup_alpha=0.4, dropout=0.2)
    data = small_data()
    first = train(base, data, CNN, device="cpu")
    second = train(base, data, CNN, device="cpu")
    other = train(base.replace(seed=4), data, CNN, device="cpu")
    assert _metrics(first) == _metrics(second)
    assert _metrics(first) != _metrics(other)


def test_divergence_is_an_outcome_not_an_exception() -> None:
    cfg = TrainConfig(optimizer="sgd", lr=1e6, epochs=2, batch_size=32)
    result = train(cfg, small_data(), CNN, device="cpu")
    assert result.outcome == "diverged"
    assert "non-finite" in result.reason or "chance" in result.reason
    assert result.epochs_run < 2
    assert math.isfinite(result.accuracy)


def test_out_of_memory_in_a_step_is_an_outcome() -> None:
    result = train(TrainConfig(epochs=2), small_data(), "tests.usermodels:oom_on_third_forward",
                   device="cpu")
    assert result.outcome == "oom"
    assert result.reason.startswith("out of memory: CUDA out of memory. Tried to allocate")
    assert result.epochs_run == 0 and result.curve == []


def test_out_of_memory_in_the_first_forward_is_an_outcome() -> None:
    # On a GPU the first forward + backward of a run is where a too-large batch fails.
    result = train(TrainConfig(epochs=2), small_data(), "tests.usermodels:oom_on_first_forward",
                   device="cpu")
    assert result.outcome == "oom"
    assert "CUDA out of memory" in result.reason


def test_callback_sees_every_epoch() -> None:
    seen: list[tuple[int, float, float, float]] = []
    result = train(TrainConfig(epochs=3), small_data(), CNN, device="cpu",
                   callback=lambda *args: seen.append(args))
    assert result.outcome == "completed"
    assert [s[0] for s in seen] == [1, 2, 3]
    for (epoch, acc, loss, seconds), point in zip(seen, result.curve, strict=True):
        assert (epoch, acc, loss, seconds) == (point["epoch"], point["accuracy"], point["loss"],
                                               point["seconds"])
        assert 0 <= acc <= 1 and math.isfinite(loss)
    seconds = [s[3] for s in seen]
    assert 0 < seconds[0] < seconds[1] < seconds[2]


def test_callback_returning_a_reason_prunes_the_run() -> None:
    def prune_at_two(epoch: int, acc: float, loss: float, seconds: float) -> str | None:
        return "slower than the front" if epoch == 2 else None

    result = train(TrainConfig(epochs=4), small_data(), CNN, device="cpu",
                   callback=prune_at_two)
    assert result.outcome == "pruned"
    assert result.reason == "slower than the front"
    assert result.epochs_run == 2 and len(result.curve) == 2


def test_callback_returning_true_prunes_with_a_default_reason() -> None:
    result = train(TrainConfig(epochs=3), small_data(), CNN, device="cpu",
                   callback=lambda *_: True)
    assert result.outcome == "pruned"
    assert result.reason == "stopped by callback at epoch 1"
    assert result.epochs_run == 1


def test_batch_larger_than_the_training_set_is_a_user_error() -> None:
    n = small_data().train_size
    with pytest.raises(UserError, match=rf"^batch_size: .*\({n}\), got {n + 1}$"):
        train(TrainConfig(batch_size=n + 1, epochs=1), small_data(), CNN, device="cpu")


def test_train_accepts_names_for_data_and_model() -> None:
    result = train(TrainConfig(epochs=1, batch_size=32), "digits", "cnn", device="cpu")
    assert result.outcome == "completed" and result.accuracy > 0.2


def test_unknown_device_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"^--device: .*'tpu:9'"):
        train(TrainConfig(epochs=1), small_data(), CNN, device="tpu:9")


def test_compiled_model_trains() -> None:
    # torch.compile needs a C++ compiler on the CPU; it compiles inside the first epoch.
    cfg = TrainConfig(epochs=1, compile=True, batch_size=32)
    result = train(cfg, small_data(), CNN, device="cpu")
    assert result.outcome == "completed", result.reason
    assert result.accuracy > 0.3
    assert result.config["compile"] is True


def test_flops_are_counted_once_per_architecture_and_trainable_set() -> None:
    from search.training import timing
    from search.training.models import SmallCNN

    net, criterion = SmallCNN(1, 5), torch.nn.CrossEntropyLoss()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))
    timing._flops.clear()
    full = timing.flops_per_sample(net, x, y, criterion)
    assert len(timing._flops) == 1
    assert timing.flops_per_sample(net, x[:4], y[:4], criterion) == full  # per sample
    assert len(timing._flops) == 1  # from the cache
    for p in net.parameters():
        p.requires_grad_(False)
    net.head[-1].weight.requires_grad_(True)
    frozen = timing.flops_per_sample(net, x, y, criterion)
    assert len(timing._flops) == 2 and frozen < full


def test_divergence_watch_flags_a_non_finite_or_huge_loss_at_once_on_the_cpu() -> None:
    from search.training.engine import Divergence

    watch = Divergence(torch.device("cpu"), limit=100.0)
    assert not watch.seen(torch.tensor(2.0)) and not watch.seen(torch.tensor(99.0))
    assert not watch.confirmed()
    assert watch.seen(torch.tensor(float("nan")))
    assert watch.seen(torch.tensor(1.0))  # once diverged, it stays diverged
    assert watch.confirmed()
    assert Divergence(torch.device("cpu"), 100.0).seen(torch.tensor(1e6))


def test_the_flop_pass_runs_once_per_precision_and_layout_it_warms() -> None:
    from search.training import timing
    from search.training.models import SmallCNN

    net, criterion = SmallCNN(3, 5), torch.nn.CrossEntropyLoss()
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))
    timing._flops.clear()
    fp32 = timing.flops_per_sample(net, x, y, criterion)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = timing.flops_per_sample(net, x, y, criterion)
    net = net.to(memory_format=torch.channels_last)
    last = timing.flops_per_sample(net, x.contiguous(memory_format=torch.channels_last), y,
                                   criterion)
    assert len(timing._flops) == 3 and fp32 == bf16 == last  # run again each time: same count
    timing.flops_per_sample(net, x, y, criterion)
    assert len(timing._flops) == 3  # that layout and precision again: from the cache


def _compile_stats_in_a_fresh_process(cfg: TrainConfig) -> dict[str, Any]:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("import json, sys\n"
            "from search.training.tricks import compile as compiler\n"
            "from search.training.config import TrainConfig\n"
            "from search.training.engine import train\n"
            "from tests.test_engine import CNN\n"
            "from tests.usermodels import small_data\n"
            "compiler.OPTIONS['backend'] = 'eager'\n"
            "cfg = TrainConfig(**json.loads(sys.argv[1]))\n"
            "result = train(cfg, small_data(), CNN, device='cpu')\n"
            "print(json.dumps(result.tricks.get('compile')))\n")
    config = {**cfg.to_dict(), "betas": None}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(config)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_each_compiled_run_compiles_as_a_fresh_process_would(monkeypatch: Any) -> None:
    # Dynamo's backend does not matter for what is counted here: "eager" skips the C++
    # code generation (tens of seconds on a CPU) and still traces, guards and recompiles.
    from search.training.tricks import compile as compiler

    monkeypatch.setattr(compiler, "OPTIONS", {"backend": "eager"})
    wide = TrainConfig(epochs=2, compile=True, batch_size=32)
    odd = TrainConfig(epochs=2, compile=True, batch_size=48)  # 160 = 3 x 48 + a partial 16
    train(wide, small_data(), CNN, device="cpu")
    after_another = train(odd, small_data(), CNN, device="cpu")
    assert after_another.outcome == "completed"
    stats = after_another.tricks["compile"]
    assert stats == _compile_stats_in_a_fresh_process(odd)
    assert stats["ran_compiled"] and stats["fallbacks"] == 0 and stats["graphs"] >= 1
    # The partial batch and the switch to evaluation each compile again.
    assert stats["compilations"] >= 2
    assert train(odd.replace(compile=False), small_data(), CNN, device="cpu").tricks == {}


def test_the_test_split_never_changes_what_training_or_selection_sees() -> None:
    # Relabel every test example: the validation curve, the best epoch and the point the
    # search is scored on stay bit-identical; only the test accuracy moves.
    import dataclasses

    data = small_data()
    x, y = data.tensors["test"]
    relabelled = dataclasses.replace(
        data, tensors={**data.tensors, "test": (x, (y + 1) % data.num_classes)})
    cfg = TrainConfig(epochs=2, batch_size=32)
    a, b = train(cfg, data, CNN, device="cpu"), train(cfg, relabelled, CNN, device="cpu")
    assert _metrics(a) == _metrics(b)
    assert (a.accuracy, a.best_epoch) == (b.accuracy, b.best_epoch)
    assert a.test_accuracy > 0.5 > b.test_accuracy  # the relabelled test split is all wrong
    without = train(cfg, data.without("test"), CNN, device="cpu")
    assert _metrics(without) == _metrics(a) and without.test_accuracy is None
