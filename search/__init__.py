"""search: find the PyTorch training recipe on the speed/accuracy Pareto front.

The public API is imported lazily so that `search --help` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "TrainConfig": "search.training.config",
    "load_config": "search.reviewing.export",
    "train": "search.training.engine",
    "TrainResult": "search.training.engine",
    "UserError": "search.errors",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
