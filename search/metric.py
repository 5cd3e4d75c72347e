"""The metric a study searches on: its name, and whether higher is better.

The built-in engine's is validation accuracy, maximized. A recipe that names its own
trainer (``train:``) names its own metric: ``metric: f1``, or ``metric: {name: loss,
direction: minimize}``. Inside a study every metric is a *score*, higher better: a
minimized metric's score is its negation, so the pruner, the accuracy floor, the front
and the hypervolume rank every study alike (Optuna stores the score; its objective 0 of
a minimized metric reads negative). What a user reads (tables, plots, ``best``,
``export``) is the metric itself, under its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from search.errors import UserError

DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Metric:
    name: str = "accuracy"
    maximize: bool = True

    def score(self, value: float) -> float:
        """What the study ranks (higher is better)."""
        return value if self.maximize else -value

    def value(self, score: float | None) -> float | None:
        """The metric a user reads, from a score."""
        return score if score is None or self.maximize else -score

    @property
    def short(self) -> str:
        """A column heading's word: ``acc`` for accuracy, else the name."""
        return "acc" if self.name == "accuracy" else self.name

    def to_mapping(self) -> dict[str, str]:
        return {"name": self.name, "direction": DIRECTIONS[0 if self.maximize else 1]}


ACCURACY = Metric()


def parse(raw: Any, *, source: str) -> Metric:
    """A recipe's ``metric``: a name (maximized) or ``{name, direction}``."""
    if raw is None:
        return ACCURACY
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or set(raw) - {"name", "direction"}:
        raise UserError(f"metric: a name, or {{name: ..., direction: maximize|minimize}}, "
                        f"got {raw!r}", source=source)
    name, direction = raw.get("name"), raw.get("direction", "maximize")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"metric.name: must be a non-empty string, got {name!r}", source=source)
    if direction not in DIRECTIONS:
        raise UserError(f"metric.direction: must be maximize or minimize, got {direction!r}",
                        source=source)
    return Metric(name.strip(), direction == "maximize")


def of_recipe(content: dict[str, Any] | None) -> Metric:
    """The metric of a stored recipe (accuracy where it names none)."""
    raw = (content or {}).get("metric")
    return ACCURACY if raw is None else Metric(raw["name"], raw["direction"] == "maximize")


def of_study(study: Any) -> Metric:
    return of_recipe(study.user_attrs.get("recipe"))
