"""Exported configurations: the file `search export` writes and ``load_config`` reads."""

from __future__ import annotations

from pathlib import Path

from search.config import TrainConfig
from search.errors import UserError
from search.files import read_mapping

FORMAT = "search/config-v1"


def load_config(path: str | Path) -> TrainConfig:
    """The typed training configuration of an exported file (or a plain mapping of fields)."""
    raw = read_mapping(path)
    if "format" in raw:
        if raw["format"] != FORMAT:
            raise UserError(f"format: not a search export ({FORMAT}), got {raw['format']!r}",
                            source=str(path))
        params = raw.get("params")
        if not isinstance(params, dict):
            raise UserError(f"params: must be a mapping, got {params!r}", source=str(path))
        return TrainConfig.from_mapping(params, source=f"{path}: params")
    return TrainConfig.from_mapping(raw, source=str(path))
