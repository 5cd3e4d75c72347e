"""A user's own code, named in a recipe as ``module:function`` (a model or a data set)."""

from __future__ import annotations

import importlib
import os
import sys

from search.errors import UserError


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
