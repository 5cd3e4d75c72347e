"""Models: the built-in CNN, torchvision classifiers by name, and a user's own model.

Each model family states its ordered block list, the unit that ``frozen_layers`` counts.
Weights come from a local checkpoint (loaded with ``weights_only=True``), a torchvision
weight name (downloaded and cached by torchvision when the network allows), or
``pretrained:mnist5k-0-4`` or ``pretrained:digits-0-4``: the built-in CNN pretrained by
this project on a disjoint source task (see ``search/pretrain.py``). The classification
head is always new, sized for the task's class count.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from search.errors import UserError
from search.freezing import as_groups


@dataclass(frozen=True)
class ModelSpec:
    """Which model: ``name`` is ``cnn``, a torchvision model name, or ``module:function``."""

    name: str = "cnn"
    weights: str | None = None  # checkpoint path, torchvision weight name, or pretrained:<task>
    width: int = 32  # built-in CNN only: channels of its first block


class SmallCNN(nn.Module):
    """A small CNN for small images (8x8 digits up to 32x32 CIFAR).

    Blocks (the frozen_layers unit): ``stem``, ``layer1``, ``layer2``; then ``head``.
    """

    blocks = (("stem",), ("layer1",), ("layer2",))

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__()

        def conv(cin: int, cout: int, pool: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        self.stem = conv(in_channels, width, pool=False)
        self.layer1 = conv(width, 2 * width, pool=True)
        self.layer2 = conv(2 * width, 4 * width, pool=True)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.stem(x))))


def build(spec: ModelSpec, *, in_channels: int, num_classes: int,
          dropout: float = 0.0) -> nn.Module:
    """Build the model with a fresh head for ``num_classes`` and load its weights."""
    if spec.name == "cnn":
        model: nn.Module = SmallCNN(in_channels, num_classes, width=spec.width, dropout=dropout)
        if spec.weights:
            load_checkpoint(model, _resolve_checkpoint(spec.weights, spec.width))
        return model
    if ":" in spec.name:
        fn = load_callable(spec.name, "model.name")
        model = fn(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
        if not isinstance(model, nn.Module):
            raise UserError(f"model.name: {spec.name} returned {type(model).__name__}, "
                            "expected a torch.nn.Module")
        if spec.weights:
            load_checkpoint(model, _resolve_checkpoint(spec.weights, spec.width))
        return model
    return _torchvision(spec, num_classes=num_classes, dropout=dropout)


def input_channels(spec: ModelSpec, data_channels: int) -> int:
    """Channels the model takes: torchvision classifiers take RGB; others take the data's."""
    return data_channels if spec.name == "cnn" or ":" in spec.name else 3


def blocks_of(model: nn.Module) -> list[list[str]]:
    """The ordered block list of a model family (what ``frozen_layers`` counts)."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model
    own = getattr(model, "blocks", None)
    if own is not None:
        return as_groups(own)
    names = {n for n, _ in model.named_children()}
    if {"conv1", "bn1", "layer1", "layer4"} <= names:  # resnet, resnext, wide_resnet
        return [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    if "features" in names:  # mobilenet, efficientnet, vgg, convnext, ...
        features = model.get_submodule("features")
        return [[f"features.{n}"] for n, _ in features.named_children()]
    return []


def count_blocks(spec: ModelSpec, *, in_channels: int, num_classes: int) -> int:
    """How many blocks ``frozen_layers`` may freeze for this model."""
    if spec.name == "cnn":
        return len(SmallCNN.blocks)
    with torch.device("meta"):
        model = build(ModelSpec(spec.name), in_channels=in_channels, num_classes=num_classes)
    return len(blocks_of(model))


def load_callable(ref: str, key: str):  # noqa: ANN201 - any user callable
    """Import ``module:function`` (a user's own model or data set). The working directory
    is searched too (last), as ``python -m`` would, since the ``search`` command's own
    folder is what Python puts first."""
    module_name, _, attr = ref.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"{key}: cannot import module {module_name!r} ({e}), got {ref!r}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"{key}: module {module_name!r} has no function {attr!r}, got {ref!r}")
    return fn


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Load a state dict saved by ``torch.save`` (``weights_only=True``); the head stays new."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: say which
        raise UserError(f"model.weights: cannot load checkpoint {str(path)!r}: {e}") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    head = _head_name(model)
    own = model.state_dict()
    keep = {k: v for k, v in state.items()
            if not (head and k.startswith(head + ".")) and k in own and v.shape == own[k].shape}
    missing = [k for k in own if k not in keep and not (head and k.startswith(head + "."))]
    if missing:
        raise UserError(f"model.weights: checkpoint {str(path)!r} does not fit the model "
                        f"(missing or mis-shaped: {', '.join(missing[:4])})")
    model.load_state_dict(keep, strict=False)


def _resolve_checkpoint(weights: str, width: int) -> Path:
    if weights.startswith("pretrained:"):
        from search import pretrain

        return pretrain.checkpoint(weights.removeprefix("pretrained:"), width=width)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"model.weights: checkpoint file not found, got {weights!r}")
    return path


def _head_name(model: nn.Module) -> str | None:
    """The name of the last Linear layer (the classification head)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return last


def _torchvision(spec: ModelSpec, *, num_classes: int, dropout: float) -> nn.Module:
    import torchvision

    if spec.name not in torchvision.models.list_models(module=torchvision.models):
        raise UserError(f"model.name: unknown model (cnn, module:function, or a torchvision "
                        f"classification model such as resnet18), got {spec.name!r}")
    weights = None
    if spec.weights and Path(spec.weights).suffix not in (".pt", ".pth"):
        try:
            weights = torchvision.models.get_weight(spec.weights)
        except (ValueError, KeyError, AttributeError):
            raise UserError(f"model.weights: unknown torchvision weights, got {spec.weights!r}"
                            ) from None
    try:
        model = torchvision.models.get_model(spec.name, weights=weights)
    except (OSError, RuntimeError) as e:  # e.g. no network to download the weights
        raise UserError(f"model.weights: cannot load {spec.weights!r} "
                        f"(offline? put a checkpoint path instead): {e}") from None
    _replace_head(model, num_classes, dropout)
    if spec.weights and weights is None:
        load_checkpoint(model, _resolve_checkpoint(spec.weights, spec.width))
    return model


def _replace_head(model: nn.Module, num_classes: int, dropout: float) -> None:
    name = _head_name(model)
    if name is None:
        raise UserError("model.name: no Linear classification head to replace")
    old = model.get_submodule(name)
    head: nn.Module = nn.Linear(old.in_features, num_classes)
    if dropout > 0:
        head = nn.Sequential(nn.Dropout(dropout), head)
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, head)
