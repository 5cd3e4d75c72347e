"""Reading the YAML files users write (recipes, spaces, exported configs) with one-line errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from search.errors import UserError


class _Loader(yaml.SafeLoader):
    """SafeLoader reading floats as YAML 1.2 does: ``1e-3`` is a number, not a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text safely, with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping; every failure is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError("file not found", source=str(path))
    if path.is_dir():
        raise UserError("is a directory, expected a YAML file", source=str(path))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text (byte {e.start})", source=str(path)) from None
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror}", source=str(path)) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise UserError(f"YAML syntax error{where}: {problem}", source=str(path)) from None
    if data is None:
        raise UserError("empty file, expected a mapping", source=str(path))
    if not isinstance(data, dict):
        raise UserError(
            f"expected a mapping at the top level, got a {type(data).__name__}", source=str(path)
        )
    return data


def expect_keys(mapping: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    """Unknown keys are an error (a typo must not be silently ignored)."""
    for key in mapping:
        if key not in allowed:
            raise UserError(f"unknown key {key!r} (valid: {', '.join(sorted(allowed))})",
                            source=where)
