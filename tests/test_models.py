"""Models: built-in, torchvision and user models; block lists; checkpoints and their errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from search.errors import UserError
from search.references import load_callable
from search.training import pretrain
from search.training.models import (
    ModelSpec,
    SmallCNN,
    blocks_of,
    build,
    count_blocks,
    input_channels,
)
from tests.usermodels import PRETRAINED, RecordingCNN


def _last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize(("name", "channels"), [
    ("cnn", 1), ("resnet18", 3), ("mobilenet_v3_small", 3), ("tests.usermodels:recording_cnn", 1),
])
def test_model_has_a_new_head_and_runs_on_32x32(name: str, channels: int) -> None:
    spec = ModelSpec(name)
    assert input_channels(spec, 1) == channels
    model = build(spec, in_channels=channels, num_classes=5)
    assert _last_linear(model).out_features == 5
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, 5)


@pytest.mark.parametrize(("name", "expected"), [
    ("cnn", [["stem"], ["layer1"], ["layer2"]]),
    ("resnet18", [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]),
    ("mobilenet_v3_small", [[f"features.{i}"] for i in range(13)]),
])
def test_blocks_of_lists_the_backbone_in_order(name: str, expected: list[list[str]]) -> None:
    spec = ModelSpec(name)
    channels = input_channels(spec, 1)
    model = build(spec, in_channels=channels, num_classes=5)
    blocks = blocks_of(model)
    assert blocks == expected
    for block in blocks:
        for module_name in block:
            model.get_submodule(module_name)  # every name resolves
    assert count_blocks(spec, in_channels=channels, num_classes=5) == len(expected)


def test_blocks_of_a_compiled_model_and_of_an_unknown_family() -> None:
    model = SmallCNN(1, 5)
    assert blocks_of(torch.compile(model)) == blocks_of(model)  # compile is lazy: no compiler
    assert blocks_of(nn.Sequential(nn.Linear(2, 2))) == []


def test_dropout_goes_into_the_head() -> None:
    cnn = build(ModelSpec("cnn"), in_channels=1, num_classes=5, dropout=0.3)
    assert isinstance(cnn.head[2], nn.Dropout) and cnn.head[2].p == 0.3
    resnet = build(ModelSpec("resnet18"), in_channels=3, num_classes=5, dropout=0.3)
    assert isinstance(resnet.fc, nn.Sequential)
    assert resnet.fc[0].p == 0.3 and resnet.fc[1].out_features == 5


def test_pretrained_checkpoint_loads_with_a_fresh_head() -> None:
    state = torch.load(pretrain.checkpoint("digits-0-4"), weights_only=True)["model"]
    torch.manual_seed(0)
    random = build(ModelSpec("cnn"), in_channels=1, num_classes=5)
    torch.manual_seed(0)
    pretrained = build(ModelSpec("cnn", weights=PRETRAINED), in_channels=1, num_classes=5)
    loaded = pretrained.state_dict()
    for key in ("stem.0.weight", "layer1.0.weight", "layer2.0.weight", "layer2.1.running_var"):
        assert torch.equal(loaded[key], state[key]), key
        assert not torch.equal(loaded[key], random.state_dict()[key]), key
    # The head is new: the random initialization, not the source task's classifier.
    assert torch.equal(pretrained.head[3].weight, random.head[3].weight)
    assert not torch.equal(pretrained.head[3].weight, state["head.3.weight"])


def test_pretrained_checkpoint_loads_into_a_user_model_of_the_same_shape() -> None:
    state = torch.load(pretrain.checkpoint("digits-0-4"), weights_only=True)["model"]
    model = build(ModelSpec("tests.usermodels:recording_cnn", weights=PRETRAINED), in_channels=1,
                  num_classes=3)
    assert isinstance(model, RecordingCNN) and model.head[3].out_features == 3
    assert torch.equal(model.stem[0].weight, state["stem.0.weight"])


@pytest.mark.parametrize("wrapped", [False, True])
def test_local_checkpoint_loads(tmp_path: Path, wrapped: bool) -> None:
    torch.manual_seed(1)
    source = SmallCNN(1, 10)
    path = tmp_path / "source.pt"
    torch.save({"model": source.state_dict()} if wrapped else source.state_dict(), path)
    model = build(ModelSpec("cnn", weights=str(path)), in_channels=1, num_classes=5)
    assert torch.equal(model.layer2[0].weight, source.layer2[0].weight)
    assert model.head[3].out_features == 5


def test_local_checkpoint_loads_into_a_torchvision_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build(ModelSpec("resnet18"), in_channels=3, num_classes=7)
    path = tmp_path / "resnet.pth"
    torch.save(source.state_dict(), path)
    model = build(ModelSpec("resnet18", weights=str(path)), in_channels=3, num_classes=5)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_mean, source.layer4[1].bn2.running_mean)
    assert model.fc.out_features == 5


def test_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    for name in ("cnn", "resnet18"):
        with pytest.raises(UserError, match=r"^model\.weights: checkpoint file not found, "
                                            r"got '.*missing\.pt'$"):
            build(ModelSpec(name, weights=str(missing)), in_channels=1, num_classes=5)


def test_checkpoint_of_another_shape_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "narrow.pt"
    torch.save(SmallCNN(1, 5, width=16).state_dict(), path)
    with pytest.raises(UserError, match=r"^model\.weights: checkpoint '.*narrow\.pt' does not "
                                        r"fit the model \(missing or mis-shaped: stem\.0\.weight"):
        build(ModelSpec("cnn", weights=str(path)), in_channels=1, num_classes=5)


def test_corrupt_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"^model\.weights: cannot load checkpoint '.*corrupt\.pt'"):
        build(ModelSpec("cnn", weights=str(path)), in_channels=1, num_classes=5)


@pytest.mark.parametrize(("spec", "message"), [
    (ModelSpec("resnet9000"), r"^model\.name: unknown model .*got 'resnet9000'$"),
    (ModelSpec("cnn", weights="pretrained:imagenet"),
     r"^model\.weights: unknown pretraining source .*got 'pretrained:imagenet'$"),
    (ModelSpec("resnet18", weights="NOPE_Weights.X"),
     r"^model\.weights: unknown torchvision weights, got 'NOPE_Weights\.X'$"),
    (ModelSpec("tests.usermodels:not_a_module"),
     r"^model\.name: tests\.usermodels:not_a_module returned str, expected a torch\.nn\.Module$"),
    (ModelSpec("tests.usermodels:no_such_model"),
     r"^model\.name: module 'tests\.usermodels' has no function 'no_such_model'"),
    (ModelSpec("no_such_package.models:net"),
     r"^model\.name: cannot import module 'no_such_package\.models'"),
])
def test_bad_model_is_a_user_error(spec: ModelSpec, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build(spec, in_channels=3, num_classes=5)


def test_user_modules_are_found_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The `search` command's own folder is first on sys.path, not the working directory
    # (unlike `python -m search`): a recipe's `model.name: mymodels:net` must still import.
    (tmp_path / "cwd_models_for_test.py").write_text("def net(**kw):\n    return 42\n",
                                                     encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_callable("cwd_models_for_test:net", "model.name")() == 42
