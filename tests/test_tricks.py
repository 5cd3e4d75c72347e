"""Each trick is applied: the building blocks do what they say, and the engine uses them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from search.errors import UserError
from search.training import pretrain
from search.training.config import TrainConfig
from search.training.engine import train
from search.training.models import ModelSpec
from search.training.models import build as build_model
from search.training.tricks import freezing, precision
from search.training.tricks import optimizer as optimizers
from tests import usermodels
from tests.usermodels import PRETRAINED, small_data, target_data

RECORDING = "tests.usermodels:recording_cnn"


def _pretrained_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec("cnn", weights=PRETRAINED), in_channels=1, num_classes=5)


def _checkpoint_state() -> dict[str, torch.Tensor]:
    return torch.load(pretrain.checkpoint("digits-0-4"), weights_only=True)["model"]


def _in_blocks(key: str, blocks: tuple[str, ...]) -> bool:
    return key.split(".")[0] in blocks


# -- freezing ---------------------------------------------------------------------------


def test_frozen_parameters_are_left_out_of_the_optimizer() -> None:
    cfg = TrainConfig(optimizer="momentum", lr=0.1, weight_decay=0.1, frozen_layers=2)
    model = _pretrained_cnn()
    names = freezing.freeze(model, freezing.blocks_of(model), cfg.frozen_layers)
    assert names == ["stem", "layer1"]
    frozen = [p for n in names for p in model.get_submodule(n).parameters()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert frozen and not any(p.requires_grad for p in frozen)
    in_optimizer = {id(p) for g in cfg.build_optimizer(model).param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in trainable}
    assert not in_optimizer & {id(p) for p in frozen}


def test_frozen_blocks_stay_bit_identical_in_a_plain_loop() -> None:
    # Momentum and weight decay would move any parameter the optimizer held.
    cfg = TrainConfig(optimizer="momentum", lr=0.1, weight_decay=0.1, frozen_layers=2)
    model = _pretrained_cnn()
    cfg.prepare(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = cfg.build_optimizer(model)
    criterion = cfg.build_criterion()
    train_x, train_y = target_data().tensors["train"]
    model.train()
    for i in range(3):
        x, y = train_x[32 * i:32 * (i + 1)], train_y[32 * i:32 * (i + 1)]
        criterion(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    for key, value in before.items():
        if _in_blocks(key, ("stem", "layer1")):
            assert torch.equal(after[key], value), key
    assert not torch.equal(after["layer2.0.weight"], before["layer2.0.weight"])
    assert not torch.equal(after["layer2.1.running_mean"], before["layer2.1.running_mean"])


def test_frozen_batchnorm_keeps_pretrained_statistics() -> None:
    model = _pretrained_cnn()
    TrainConfig(frozen_layers=1).prepare(model)
    assert isinstance(model.stem[1], FrozenBatchNorm2d)
    assert isinstance(model.layer1[1], nn.BatchNorm2d)  # not frozen: still learns statistics
    state = _checkpoint_state()
    model.train()
    with torch.no_grad():
        # Shifted data would move the running stats of unfrozen BatchNorm layers.
        model(target_data().tensors["train"][0][:64] * 3 + 1)
    for stat in ("running_mean", "running_var", "weight", "bias"):
        assert torch.equal(getattr(model.stem[1], stat), state[f"stem.1.{stat}"]), stat
    assert not torch.equal(model.layer1[1].running_mean, state["layer1.1.running_mean"])


def test_backward_stops_at_the_first_trainable_block() -> None:
    model = _pretrained_cnn()
    TrainConfig(frozen_layers=2).prepare(model)
    needs_grad: dict[str, bool] = {}
    for name in ("layer1", "layer2"):  # the last frozen block, the first trainable one
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: needs_grad.__setitem__(name, out.requires_grad))
    model.train()
    x, y = target_data().tensors["train"]
    loss = nn.functional.cross_entropy(model(x[:32]), y[:32])
    loss.backward()
    assert needs_grad == {"layer1": False, "layer2": True}
    assert all(p.grad is None for p in model.layer1.parameters())
    assert all(p.grad is not None for p in model.layer2.parameters())


def test_engine_trains_with_frozen_blocks_unchanged() -> None:
    usermodels.INSTANCES.clear()
    cfg = TrainConfig(optimizer="momentum", lr=0.05, weight_decay=0.01, frozen_layers=2,
                      epochs=1, batch_size=32)
    result = train(cfg, small_data(), ModelSpec(RECORDING, weights=PRETRAINED), device="cpu")
    assert result.outcome == "completed"
    (model,) = usermodels.INSTANCES
    assert isinstance(model.stem[1], FrozenBatchNorm2d)
    assert isinstance(model.layer1[1], FrozenBatchNorm2d)
    trained, state = model.state_dict(), _checkpoint_state()
    checked = [k for k in trained if _in_blocks(k, ("stem", "layer1"))]
    assert len(checked) >= 8
    for key in checked:
        assert torch.equal(trained[key], state[key]), key
    assert not torch.equal(trained["layer2.0.weight"], state["layer2.0.weight"])


def test_engine_freezing_all_blocks_halves_the_counted_flops() -> None:
    spec, data = ModelSpec("cnn", weights=PRETRAINED), small_data()
    full = train(TrainConfig(epochs=1), data, spec, device="cpu")
    frozen = train(TrainConfig(epochs=1, frozen_layers=3), data, spec, device="cpu")
    # No backward through the backbone: roughly the forward cost only (about a third).
    assert frozen.flops_per_sample < 0.5 * full.flops_per_sample


def test_freezing_more_blocks_than_the_model_has_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"^frozen_layers: the model has 3 blocks, got 4$"):
        train(TrainConfig(frozen_layers=4, epochs=1), target_data(),
              ModelSpec("cnn", weights=PRETRAINED), device="cpu")


def test_freezing_without_pretrained_weights_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"^frozen_layers: .*pretrained.*, got 2$"):
        train(TrainConfig(frozen_layers=2, epochs=1), target_data(), ModelSpec("cnn"),
              device="cpu")


# -- label smoothing --------------------------------------------------------------------


def test_label_smoothing_changes_the_loss_for_the_same_logits() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    plain = TrainConfig().build_criterion()(logits, y)
    smooth = TrainConfig(label_smoothing=0.2).build_criterion()(logits, y)
    assert not torch.isclose(plain, smooth)
    # (1 - eps) * cross-entropy + eps * mean over classes of -log p
    expected = 0.8 * plain + 0.2 * (-logits.log_softmax(1).mean(1)).mean()
    assert torch.isclose(smooth, expected)


# -- mixup / cutmix ---------------------------------------------------------------------


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = target_data().tensors["train"]
    return x[:16], y[:16]


def _check_soft_targets(target: torch.Tensor, y: torch.Tensor) -> None:
    assert target.shape == (16, 5) and target.dtype.is_floating_point
    assert torch.allclose(target.sum(1), torch.ones(16))
    assert ((target > 0) & (target < 1)).any()  # really mixed, not one-hot
    assert (target.argmax(1) == y).float().mean() >= 0.5 or (
        target.argmax(1) == y.roll(1, 0)).float().mean() >= 0.5


def test_mixup_blends_pairs_and_their_labels() -> None:
    x, y = _batch()
    torch.manual_seed(0)
    mixed, target = TrainConfig(mixup_alpha=0.4).build_batch(5)(x, y)
    _check_soft_targets(target, y)
    # torchvision's MixUp: lam * batch + (1 - lam) * batch rolled by one, labels alike
    i = int((y != y.roll(1, 0)).nonzero()[0])  # a pair of different labels shows lam
    lam = target[i, y[i]]
    assert 0 < lam < 1
    onehot = nn.functional.one_hot(y, 5).float()
    assert torch.allclose(target, lam * onehot + (1 - lam) * onehot.roll(1, 0))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-5)
    torch.manual_seed(0)
    again, target_again = TrainConfig(mixup_alpha=0.4).build_batch(5)(x, y)
    assert torch.equal(again, mixed) and torch.equal(target_again, target)  # seeded


def test_cutmix_pastes_patches_and_mixes_labels_by_area() -> None:
    x, y = _batch()
    torch.manual_seed(1)
    mixed, target = TrainConfig(cutmix_alpha=1.0).build_batch(5)(x, y)
    _check_soft_targets(target, y)
    rolled = x.roll(1, 0)
    assert ((mixed == x) | (mixed == rolled)).all()  # every pixel from one of the pair
    assert (mixed != x).any()
    pasted = (mixed != x)[:, 0].float().mean((1, 2))  # at most the patch area per image
    kept = target[torch.arange(16), y]
    differ = y != y.roll(1, 0)
    assert (pasted[differ] <= 1 - kept[differ] + 1e-6).all()


def test_mixup_and_cutmix_together_pick_one_per_batch() -> None:
    x, y = _batch()
    mixer = TrainConfig(mixup_alpha=0.4, cutmix_alpha=1.0).build_batch(5)
    torch.manual_seed(0)
    kinds = set()
    for _ in range(12):
        mixed, target = mixer(x, y)
        assert torch.allclose(target.sum(1), torch.ones(16))
        pixelwise = ((mixed == x) | (mixed == x.roll(1, 0))).all()
        kinds.add("cutmix" if pixelwise else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_no_mixing_is_the_identity() -> None:
    x, y = _batch()
    mixed, target = TrainConfig().build_batch(5)(x, y)
    assert mixed is x and target is y


# -- precision --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "enabled"), [("fp16", True), ("bf16", False), ("fp32", False)])
def test_grad_scaler_is_enabled_for_fp16_only(name: str, enabled: bool) -> None:
    assert precision.grad_scaler(name, "cpu").is_enabled() is enabled
    assert TrainConfig(precision=name).grad_scaler("cpu").is_enabled() is enabled


@pytest.mark.parametrize(("name", "dtype"), [
    ("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16),
])
def test_engine_runs_the_forward_in_the_configured_precision(name: str,
                                                             dtype: torch.dtype) -> None:
    usermodels.SEEN_DTYPES.clear()
    data = small_data()  # fp16 on CPU is slow: 5 steps
    result = train(TrainConfig(precision=name, epochs=1, batch_size=32), data,
                   "tests.usermodels:recording_small_cnn", device="cpu")
    assert result.outcome == "completed" and math.isfinite(result.accuracy)
    steps = data.steps_per_epoch(32)
    assert steps == 5
    assert usermodels.SEEN_DTYPES.count(dtype) >= steps
    if name == "fp32":
        assert set(usermodels.SEEN_DTYPES) == {torch.float32}


# -- optimizers -------------------------------------------------------------------------

EXPECTED = {
    "sgd": (torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": (torch.optim.RMSprop, {"momentum": 0.0}),
    "adagrad": (torch.optim.Adagrad, {}),
    "adam": (torch.optim.Adam, {"betas": (0.9, 0.999)}),
    "adamw": (torch.optim.AdamW, {"betas": (0.9, 0.999)}),
}


def test_every_registered_optimizer_is_checked() -> None:
    assert set(EXPECTED) == set(optimizers.OPTIMIZERS)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_optimizer_class_and_hyperparameters(name: str) -> None:
    cls, hyper = EXPECTED[name]
    opt = TrainConfig(optimizer=name, lr=0.03, weight_decay=0.002).build_optimizer(nn.Linear(3, 2))
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.03 and group["weight_decay"] == 0.002
    for key, value in hyper.items():
        assert group[key] == value, key


def test_configured_momentum_and_betas_override_the_defaults() -> None:
    model = nn.Linear(3, 2)
    group = TrainConfig(optimizer="nesterov", momentum=0.5).build_optimizer(model).param_groups[0]
    assert group["momentum"] == 0.5 and group["nesterov"] is True
    group = TrainConfig(optimizer="rmsprop", momentum=0.3).build_optimizer(model).param_groups[0]
    assert group["momentum"] == 0.3
    group = TrainConfig(optimizer="adamw", betas=(0.8, 0.95)).build_optimizer(model).param_groups[0]
    assert tuple(group["betas"]) == (0.8, 0.95)


# -- lr schedules -----------------------------------------------------------------------


def _lrs(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The lr of every optimizer step of the run, as a training loop sees it."""
    optimizer = cfg.build_optimizer(nn.Linear(2, 2))
    scheduler = cfg.build_scheduler(optimizer, steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_constant_schedule_ramps_up_over_the_warmup() -> None:
    lrs = _lrs(TrainConfig(lr=0.1, epochs=2, lr_schedule="constant", warmup=0.25), 10)
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert lrs[5:] == pytest.approx([0.1] * 15)


def test_constant_schedule_without_warmup_is_flat() -> None:
    assert _lrs(TrainConfig(lr=0.1, epochs=2), 5) == pytest.approx([0.1] * 10)


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    lrs = _lrs(TrainConfig(lr=0.1, epochs=4, lr_schedule="cosine", warmup=0.1), 10)
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    decay = lrs[3:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert lrs[22] == pytest.approx(0.05)  # half-way through the decay
    assert lrs[-1] < 0.001  # ~0 at the end


def test_onecycle_peaks_at_lr_at_the_end_of_warmup() -> None:
    lrs = _lrs(TrainConfig(lr=0.1, epochs=2, lr_schedule="onecycle", warmup=0.3), 10)
    assert lrs[0] == pytest.approx(0.1 / 25)
    assert max(lrs) == pytest.approx(0.1)
    assert lrs.index(max(lrs)) == 5  # step 6 of 20: the end of the 30% warm-up
    assert lrs[-1] < 0.1 / 1e4


def test_onecycle_without_warmup_uses_torch_default() -> None:
    lrs = _lrs(TrainConfig(lr=0.1, epochs=2, lr_schedule="onecycle"), 10)
    assert lrs.index(max(lrs)) == 5


@pytest.mark.parametrize("steps", range(1, 25))
def test_onecycle_runs_for_every_warmup_and_step_count(steps: int) -> None:
    # OneCycleLR divides by zero when the warm-up is exactly one step (0.25 of 4 steps):
    # a search draws such configs (found by the efficiency benchmark).
    for warmup in [i * 0.05 for i in range(20)]:
        lrs = _lrs(TrainConfig(lr=0.1, epochs=1, lr_schedule="onecycle", warmup=warmup),
                   steps)
        assert len(lrs) == steps and all(0 < lr <= 0.1 + 1e-12 for lr in lrs)


def test_onecycle_lengthens_a_one_step_warmup_to_two() -> None:
    lrs = _lrs(TrainConfig(lr=0.1, epochs=1, lr_schedule="onecycle", warmup=0.25), 4)
    assert lrs[:2] == pytest.approx([0.004, 0.1])  # from lr/25 to the peak, then down
    assert lrs[3] < lrs[2] < lrs[1]


def test_linear_lr_scaling_sets_the_optimizer_lr() -> None:
    cfg = TrainConfig(optimizer="momentum", lr=0.4, batch_size=64, lr_scaling="linear")
    assert optimizers.effective_lr(cfg) == pytest.approx(0.1)
    assert cfg.build_optimizer(nn.Linear(2, 2)).param_groups[0]["lr"] == pytest.approx(0.1)
    assert _lrs(cfg.replace(epochs=1), 3) == pytest.approx([0.1] * 3)
    peak = max(_lrs(cfg.replace(epochs=2, lr_schedule="onecycle", warmup=0.5), 5))
    assert peak == pytest.approx(0.1)
    unscaled = cfg.replace(lr_scaling="none").build_optimizer(nn.Linear(2, 2))
    assert unscaled.param_groups[0]["lr"] == pytest.approx(0.4)


# -- augmentation ------------------------------------------------------------------------


def test_crop_is_torchvisions_padded_crop_with_each_images_own_offset() -> None:
    from torchvision.transforms.v2 import functional as tvf

    from search.training.tricks import augmentation

    x = torch.randn(16, 3, 8, 8)
    torch.manual_seed(3)
    out = augmentation.crop(x, 2)
    torch.manual_seed(3)  # the offsets crop drew, drawn again
    top = torch.randint(0, 5, (16, 1, 1)).flatten().tolist()
    left = torch.randint(0, 5, (16, 1, 1)).flatten().tolist()
    assert len(set(zip(top, left, strict=True))) > 1  # not one crop for the whole batch
    for i in range(16):
        expected = tvf.crop(tvf.pad(x[i], [2]), top[i], left[i], 8, 8)
        assert torch.equal(out[i], expected), i


def test_hflip_flips_about_half_of_the_images_each_whole() -> None:
    from search.training.tricks import augmentation

    x = torch.randn(200, 1, 4, 4)
    out = augmentation.hflip(x)
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(200)]
    kept = [torch.equal(out[i], x[i]) for i in range(200)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 60 < sum(flipped) < 140


def test_augmentation_is_off_by_default_and_refused_where_it_does_not_apply() -> None:
    from search.training.trick import Context

    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    assert TrainConfig().build_batch(4)(x, y)[0] is x
    with pytest.raises(UserError, match=r"^hflip: a flip may change what an image means"):
        TrainConfig(hflip=True).check(Context(flip_invariant=False))
    TrainConfig(hflip=True).check(Context(flip_invariant=True))
    with pytest.raises(UserError, match=r"^crop_padding: augments images"):
        TrainConfig(crop_padding=2).check(Context(images=False))


# -- depth and width ---------------------------------------------------------------------


def test_cnn_depth_and_width_build_the_blocks_asked_for() -> None:
    shallow = build_model(ModelSpec("cnn"), in_channels=1, num_classes=5, depth=2, width=8)
    assert freezing.blocks_of(shallow) == [["stem"], ["layer1"]]
    assert shallow.stem[0].out_channels == 8 and shallow.head[-1].in_features == 16
    deep = build_model(ModelSpec("cnn"), in_channels=1, num_classes=5, depth=5)
    assert len(freezing.blocks_of(deep)) == 5
    assert deep(torch.randn(2, 1, 8, 8)).shape == (2, 5)  # 8x8 never pools to nothing


def test_a_pretrained_backbone_keeps_its_first_k_blocks() -> None:
    state = _checkpoint_state()
    model = build_model(ModelSpec("cnn", weights=PRETRAINED), in_channels=1, num_classes=5,
                        depth=2)
    assert not hasattr(model, "layer2")
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, state[key]), key
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_a_torchvision_backbone_truncated_to_its_first_blocks() -> None:
    model = build_model(ModelSpec("resnet18"), in_channels=3, num_classes=5, depth=3)
    assert isinstance(model.layer3, nn.Identity) and isinstance(model.layer4, nn.Identity)
    assert model.fc.in_features == 128  # layer2's channels
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    mobile = build_model(ModelSpec("mobilenet_v3_small"), in_channels=3, num_classes=5, depth=4)
    assert mobile(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_a_model_function_gets_the_arguments_it_takes_and_refuses_the_rest() -> None:
    model = build_model(ModelSpec("tests.usermodels:sized_cnn"), in_channels=1, num_classes=5,
                        depth=2, width=4, dropout=0.1)
    assert model.stem[0].out_channels == 4 and len(freezing.blocks_of(model)) == 2
    with pytest.raises(UserError, match=r"^depth: model function tests.usermodels:"
                                        r"recording_cnn takes no 'depth' argument"):
        build_model(ModelSpec(RECORDING), in_channels=1, num_classes=5, depth=2)


def test_depth_and_width_are_refused_where_the_model_cannot_take_them() -> None:
    from search.training.trick import Context

    with pytest.raises(UserError, match=r"^width: a pretrained backbone's width"):
        TrainConfig(width=8).check(Context(pretrained=True, blocks=3))
    with pytest.raises(UserError, match=r"^depth: the pretrained model has 3 blocks"):
        TrainConfig(depth=4).check(Context(pretrained=True, blocks=3))
    with pytest.raises(UserError, match=r"^depth: must keep the 2 frozen blocks"):
        TrainConfig(depth=1, frozen_layers=2).check(Context(pretrained=True, blocks=3))
    with pytest.raises(UserError, match=r"^depth: the model takes no depth argument"):
        TrainConfig(depth=2).check(Context(model_kwargs=frozenset({"dropout"})))


def test_depth_changes_what_trains_and_how_fast() -> None:
    data = small_data()
    full = train(TrainConfig(epochs=1), data, "cnn", device="cpu", warm=False)
    short = train(TrainConfig(epochs=1, depth=1), data, "cnn", device="cpu", warm=False)
    assert short.flops_per_sample < full.flops_per_sample / 2


# -- TF32 and cuDNN autotuning ------------------------------------------------------------


@pytest.mark.parametrize(("field", "flags"), [
    ("tf32", lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)),
    ("cudnn_benchmark", lambda: (torch.backends.cudnn.benchmark,)),
])
def test_gpu_switches_hold_for_the_run_only(field: str, flags: object) -> None:
    before = flags()
    with TrainConfig(**{field: True}).switches("cpu"):
        assert all(flags())
    assert flags() == before
    with TrainConfig().switches("cpu"):
        assert not any(flags())


# -- gradient clipping -------------------------------------------------------------------


def test_clipping_bounds_the_step_by_the_gradient_norm() -> None:
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(optimizer="sgd", lr=1.0, clip_norm=0.01)
    optimizer, scaler = cfg.build_optimizer(model), cfg.grad_scaler("cpu")
    loss = cfg.build_criterion()(model(torch.randn(16, 8) * 100), torch.arange(16) % 3)
    loss.backward()
    raw = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item()
    cfg.build_before_step(optimizer, scaler)()
    optimizer.step()
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum()
                           for p, b in zip(model.parameters(), before, strict=True))).item()
    assert raw > 1 and moved == pytest.approx(0.01, rel=1e-4)  # lr 1: the step is the gradient
    assert TrainConfig().build_before_step(optimizer, scaler) is None
