"""Models: the built-in CNN, torchvision classifiers by name, and a user's own model.

Each model family states its ordered block list, the unit that ``frozen_layers`` and
``depth`` count (``search/training/tricks/freezing.py``). The tricks' model arguments
(``TrainConfig.model_kwargs``: dropout, depth, width) reach every family: the built-in
CNN takes them all; a torchvision model takes dropout (before its new head) and depth
(its first k blocks, the head on the last); a user's model function gets those it names
in its signature, and a set one it does not take is refused.
Weights come from a local checkpoint (loaded with ``weights_only=True``), a torchvision
weight name (downloaded and cached by torchvision when the network allows), or
``pretrained:mnist5k-0-4`` or ``pretrained:digits-0-4``: the built-in CNN pretrained by
this project on a disjoint source task (see ``search/training/pretrain.py``). The classification
head is always new, sized for the task's class count.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.errors import UserError
from search.references import load_callable
from search.training import pretrain
from search.training.cnn import SmallCNN
from search.training.tricks.freezing import blocks_of


@dataclass(frozen=True)
class ModelSpec:
    """Which model: ``name`` is ``cnn``, a torchvision model name, or ``module:function``."""

    name: str = "cnn"
    weights: str | None = None  # checkpoint path, torchvision weight name, or pretrained:<task>
    width: int = 32  # built-in CNN only: channels of its first block


# Model arguments the tricks may set; a model function gets those its signature names.
CNN_KWARGS = frozenset({"dropout", "depth", "width"})
TORCHVISION_KWARGS = frozenset({"dropout", "depth"})


def build(spec: ModelSpec, *, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the model with a fresh head for ``num_classes`` and load its weights;
    ``kwargs`` are the config's model arguments (``TrainConfig.model_kwargs()``)."""
    if spec.name == "cnn":
        width = kwargs.get("width") or spec.width
        model: nn.Module = SmallCNN(in_channels, num_classes, width=width,
                                    depth=kwargs.get("depth") or 3,
                                    dropout=kwargs.get("dropout", 0.0))
        if spec.weights:
            load_checkpoint(model, _resolve_checkpoint(spec.weights, width))
        return model
    if ":" in spec.name:
        fn = load_callable(spec.name, "model.name")
        takes = accepted_kwargs(spec)
        kwargs = {"dropout": 0.0, **kwargs}  # a model function may require it
        for key, value in kwargs.items():
            if key not in takes and value:  # dropout 0.0 means none: nothing to pass
                raise UserError(f"{key}: model function {spec.name} takes no {key!r} "
                                f"argument, got {value!r}")
        model = fn(num_classes=num_classes, in_channels=in_channels,
                   **{k: v for k, v in kwargs.items() if k in takes})
        if not isinstance(model, nn.Module):
            raise UserError(f"model.name: {spec.name} returned {type(model).__name__}, "
                            "expected a torch.nn.Module")
        if spec.weights:
            load_checkpoint(model, _resolve_checkpoint(spec.weights, spec.width))
        return model
    return _torchvision(spec, num_classes=num_classes, dropout=kwargs.get("dropout", 0.0),
                        depth=kwargs.get("depth"))


def accepted_kwargs(spec: ModelSpec) -> frozenset[str]:
    """The model arguments ``spec``'s family takes (a function: those it names, or every
    one if it takes ``**kwargs``)."""
    if spec.name == "cnn":
        return CNN_KWARGS
    if ":" not in spec.name:
        return TORCHVISION_KWARGS
    params = inspect.signature(load_callable(spec.name, "model.name")).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return CNN_KWARGS
    return frozenset(p.name for p in params) & CNN_KWARGS


def check_inputs(spec: ModelSpec, images: bool, shape: str) -> None:
    """The built-in CNN and torchvision models take images; other inputs need a model
    function (``module:function``)."""
    if not images and ":" not in spec.name:
        raise UserError(f"model.name: {spec.name} takes images (N, C, H, W); the data gives "
                        f"inputs shaped {shape}: name your own model function "
                        f"(module:function), got {spec.name!r}")


def input_channels(spec: ModelSpec, data_channels: int) -> int:
    """Channels the model takes: torchvision classifiers take RGB; others take the data's."""
    return data_channels if spec.name == "cnn" or ":" in spec.name else 3


def count_blocks(spec: ModelSpec, *, in_channels: int, num_classes: int) -> int:
    """How many blocks the model has (what ``frozen_layers`` may freeze at most)."""
    if spec.name == "cnn":
        return len(SmallCNN.blocks)
    with torch.device("meta"):
        model = build(ModelSpec(spec.name), in_channels=in_channels, num_classes=num_classes)
    return len(blocks_of(model))


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


def _torchvision(spec: ModelSpec, *, num_classes: int, dropout: float,
                 depth: int | None) -> nn.Module:
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
    if depth is not None:
        _truncate(model, depth, num_classes, dropout)
    return model


def _truncate(model: nn.Module, depth: int, num_classes: int, dropout: float) -> None:
    """Keep the first ``depth`` blocks (the later ones become identities, never run) and
    put a new head, sized by a trial forward pass, on the last block kept."""
    blocks = blocks_of(model)
    if depth > len(blocks):
        raise UserError(f"depth: the model has {len(blocks)} blocks, got {depth}")
    for block in blocks[depth:]:
        for name in block:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())
    head = _head_name(model)
    container = head.split(".")[0]  # fc, or classifier (its hidden layers go too)
    setattr(model, container, nn.Identity())
    was_training = model.training
    with torch.no_grad():
        features = model.eval()(torch.zeros(1, 3, 64, 64)).flatten(1).shape[1]
    model.train(was_training)
    new: nn.Module = nn.Linear(features, num_classes)
    if dropout > 0:
        new = nn.Sequential(nn.Dropout(dropout), new)
    setattr(model, container, new)


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
