"""The trick registry: each module in this folder declares one ``TRICK`` (see
``search/training/trick.py``); this finds them, in their declared order.

Adding a trick is adding a module here (and its test): the config's fields, their checks,
the space schema, the progress lines, ``search tricks`` and the README's table all derive
from what the modules declare.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from search.training.trick import Field, Trick


def _discover() -> tuple[Trick, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        trick = importlib.import_module(f"{__name__}.{info.name}").TRICK
        if trick.name != info.name:
            raise RuntimeError(f"tricks/{info.name}.py declares trick {trick.name!r}: a trick "
                               f"is named after its module")
        found.append(trick)
    return tuple(sorted(found, key=lambda t: (t.order, t.name)))


TRICKS: tuple[Trick, ...] = _discover()
FIELDS: dict[str, Field] = {}
OWNER: dict[str, Trick] = {}  # field name -> its trick
for _trick in TRICKS:
    for _field in _trick.fields:
        if _field.name in FIELDS:
            raise RuntimeError(f"trick {_trick.name}: field {_field.name!r} is already "
                               f"declared by trick {OWNER[_field.name].name}")
        FIELDS[_field.name], OWNER[_field.name] = _field, _trick


@functools.cache
def playing(role: str) -> tuple[Trick, ...]:
    """The tricks that play ``role``, in order (looked up once: loops call this per step)."""
    return tuple(t for t in TRICKS if getattr(t, role) is not None)


@functools.cache
def the(role: str) -> Trick:
    """The one trick that plays ``role`` (the optimizer, the criterion, ...)."""
    players = playing(role)
    if len(players) != 1:
        raise RuntimeError(f"exactly one trick must play {role}, got "
                           f"{[t.name for t in players]}")
    return players[0]


def table() -> str:
    """Every config field by trick, as a Markdown table (README, ``search tricks``)."""
    rows = ["| trick | field | default | meaning |", "|---|---|---|---|"]
    for trick in TRICKS:
        for i, field in enumerate(trick.fields):
            name = f"[{trick.name}](search/training/tricks/{trick.name}.py)" if i == 0 else ""
            rows.append(f"| {name} | `{field.name}` | "
                        f"`{_yaml(field.default)}` | {field.help} |")
    return "\n".join(rows)


def _yaml(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
