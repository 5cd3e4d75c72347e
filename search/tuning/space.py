"""Search spaces (``spaces/*.yaml``): YAML -> Optuna suggestions -> a typed TrainConfig.

Each top-level key is a TrainConfig field, and its value says how the search treats it:

    lr:            {low: 1.0e-4, high: 0.1, log: true}      # float range (log scale)
    batch_size:    {choices: [32, 64, 128, 256]}            # categorical
    frozen_layers: {low: 0, high: max}                      # int range; max = model's blocks
    warmup:        {low: 0.0, high: 0.3, step: 0.05}        # stepped range
    precision:     fp32                                     # fixed value (or {value: fp32})
    momentum:      {low: 0.8, high: 0.99, when: {optimizer: [momentum, nesterov]}}
    cutmix_alpha:  {low: 0.1, high: 1.0, optional: true}    # sampled only when use_cutmix_alpha

``when`` makes a dimension conditional on earlier ones (an unmet condition leaves the
field at the recipe's baseline). ``optional`` adds a boolean dimension ``use_<field>``;
when it is false the field keeps its baseline value (off for the tricks, whose baselines
are 0). Optuna params are named after the fields, so a trial's params read as a config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from search.errors import UserError
from search.files import read_mapping
from search.training.config import TrainConfig
from search.training.trick import Context, Field, number
from search.training.tricks import FIELDS, TRICKS

_SPEC_KEYS = {"choices", "low", "high", "log", "step", "value", "when", "optional"}


@dataclass(frozen=True)
class Dimension:
    """One field of the search: fixed, categorical or a numeric range."""

    name: str
    value: Any = None  # fixed value (when kind == "fixed")
    choices: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    optional: bool = False
    sample: str = "float"  # a range's kind: "int" or "float" (the field's, see trick.py)
    extra: bool = False  # not a config field: a param of a user's trainer (``run.params``)

    @property
    def kind(self) -> str:
        if self.choices:
            return "categorical"
        if self.low is not None:
            return "int" if self.sample == "int" else "float"
        return "fixed"


@dataclass(frozen=True)
class Space:
    """A parsed, validated search space."""

    path: Path | None
    dimensions: tuple[Dimension, ...]

    def suggest(self, trial: optuna.trial.BaseTrial, base: TrainConfig) -> TrainConfig:
        """Sample one configuration: the space's fields over ``base`` (the baseline)."""
        chosen: dict[str, Any] = {}
        for dim in self.dimensions:
            if dim.extra or not all(chosen.get(k, getattr(base, k)) in vals
                                    for k, vals in dim.when):
                continue
            if dim.optional and not trial.suggest_categorical(f"use_{dim.name}", [False, True]):
                continue
            value = _suggest(trial, dim)
            decode = FIELDS[dim.name].decode
            chosen[dim.name] = decode(value) if decode and dim.kind == "categorical" else value
        for trick in TRICKS:
            if trick.sampled:
                trick.sampled(chosen, base)
        return base.replace(**chosen)

    def extras(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample the params that are not config fields (a user's trainer's own)."""
        return {dim.name: _suggest(trial, dim) for dim in self.dimensions if dim.extra}

    def params_of(self, config: TrainConfig, extras: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
        """Optuna params that make ``suggest`` reproduce ``config`` where the space allows
        (for enqueueing the baseline); values outside a dimension's range are left out."""
        out: dict[str, Any] = {}
        off = TrainConfig()
        for dim in self.dimensions:
            if dim.extra:
                if dim.kind != "fixed" and extras and dim.name in extras \
                        and extras[dim.name] in _Values(dim):
                    out[dim.name] = extras[dim.name]
                continue
            field = FIELDS[dim.name]
            value = getattr(config, dim.name)
            if dim.kind == "fixed" or not all(getattr(config, k) in v for k, v in dim.when):
                continue
            if value is None and field.default_of:
                value = field.default_of(config)  # None means e.g. the optimizer's default
            if dim.optional:
                on = value != getattr(off, dim.name)
                out[f"use_{dim.name}"] = on
                if not on:
                    continue
            if field.encode and value is not None:
                value = field.encode(value)
            if dim.kind == "categorical" and value in dim.choices:
                out[dim.name] = value
            elif dim.kind in ("int", "float") and dim.low <= value <= dim.high:
                out[dim.name] = value
        return out

    def probes(self, base: TrainConfig, ctx: Context | None = None,
               extras: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The baseline with one speed-up trick each, where the space searches that trick:
        (label, Optuna params) per probe, to enqueue right after the baseline.

        A study's first trials then show what each trick alone does to the baseline (bf16,
        channels-last, compile, one frozen block, a bigger batch, half the epochs: each
        trick's module says its probes), and the sampler starts from measured neighbours of
        a config known to be good instead of only random ones: in a short study most
        random configs of a wide space land below the accuracy floor."""
        values = {d.name: _Values(d) for d in self.dimensions if d.kind != "fixed"}
        changes = [change for trick in TRICKS if trick.probes
                   for change in trick.probes(base, values)]
        out, seen = [], [self.params_of(base, extras)]
        for change in changes:
            try:
                probe = base.replace(**change)
                if ctx is not None:
                    probe.check(ctx)
            except UserError:
                continue
            params = self.params_of(probe, extras)
            name, value = next(iter(change.items()))
            if params.get(name) == value and params not in seen:
                seen.append(params)
                out.append((f"{name}={value}", params))
        return out

    def check(self, base: TrainConfig, ctx: Context, *, source: str) -> None:
        """Refuse, at recipe load, a value the space can sample that the model or data
        cannot take (each dimension's choices, or its range's ends, on the baseline)."""
        for dim in self.dimensions:
            if dim.extra:
                continue
            for value in _Values(dim).ends():
                if FIELDS[dim.name].decode and isinstance(value, str):
                    value = FIELDS[dim.name].decode(value)
                try:
                    config = base.replace(**{dim.name: value})
                except UserError:
                    continue  # a combination the config itself refuses: the sampler's
                try:
                    config.check(ctx)
                except UserError as e:
                    raise e.within(source) from None

    def grid(self) -> dict[str, list[Any]]:
        """The search space for Optuna's GridSampler (choices and stepped ranges only)."""
        out: dict[str, list[Any]] = {}
        for dim in self.dimensions:
            if dim.when or dim.optional:
                raise UserError(f"{dim.name}: the grid sampler takes no conditional dimensions",
                                source=str(self.path))
            if dim.kind == "categorical":
                out[dim.name] = list(dim.choices)
            elif dim.kind == "fixed":
                out[dim.name] = [dim.value]
            elif dim.step is None and dim.kind == "float":
                raise UserError(f"{dim.name}: the grid sampler needs choices or a step",
                                source=str(self.path))
            else:
                step = dim.step or 1
                n = math.floor((dim.high - dim.low) / step + 1e-9)  # never past high
                out[dim.name] = [_cast(dim, dim.low + i * step) for i in range(n + 1)]
        return out

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)


def _suggest(trial: optuna.trial.BaseTrial, dim: Dimension) -> Any:
    if dim.kind == "fixed":
        return dim.value
    if dim.kind == "categorical":
        return trial.suggest_categorical(dim.name, list(dim.choices))
    if dim.kind == "int":
        return trial.suggest_int(dim.name, int(dim.low), int(dim.high), step=int(dim.step or 1),
                                 log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step, log=dim.log)


def _extra_field(name: str, spec: dict[str, Any]) -> Field:
    """A trainer's own param: a number range (int when both ends are), or scalar choices."""
    if "low" in spec:
        ints = all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool)
                   for k in ("low", "high"))
        return Field(name, "Any", None, number(-math.inf, integer=ints), "",
                     sample="int" if ints else "float")
    return Field(name, "Any", None, _scalar, "")


def _scalar(v: Any) -> Any:
    if not isinstance(v, (str, int, float, bool)):
        raise TypeError("must be a number, a string or true/false")
    return v


class _Values:
    """The values a dimension can sample: ``in`` tests membership; iterating gives its
    choices (a range gives none: too many)."""

    def __init__(self, dim: Dimension) -> None:
        self.dim = dim

    def __contains__(self, value: Any) -> bool:
        dim = self.dim
        if dim.kind == "categorical":
            return value in dim.choices
        if dim.kind == "fixed":
            return value == dim.value
        return isinstance(value, (int, float)) and dim.low <= value <= dim.high

    def __iter__(self) -> Any:
        return iter(self.dim.choices)

    def ends(self) -> tuple[Any, ...]:
        dim = self.dim
        if dim.kind == "categorical":
            return dim.choices
        return (dim.value,) if dim.kind == "fixed" else (dim.low, dim.high)


def _cast(dim: Dimension, v: float) -> Any:
    return int(round(v)) if dim.kind == "int" else round(v, 12)


def load(path: str | Path, *, max_blocks: int | None = None) -> Space:
    """Read and validate a space file; ``max_blocks`` resolves ``high: max`` (the model's
    block count, for the fields that count blocks)."""
    path = Path(path)
    raw = read_mapping(path)
    return parse(raw, source=str(path), path=path, max_blocks=max_blocks)


def parse(raw: dict[str, Any], *, source: str, path: Path | None = None,
          max_blocks: int | None = None, base: TrainConfig | None = None,
          extras: bool = False) -> Space:
    """Validate a space mapping; ``base`` (the baseline) fills the fields it leaves fixed.
    ``extras``: names that are not config fields are a user trainer's own params."""
    fields = TrainConfig.fields()
    dims = []
    seen: list[str] = []
    for name, spec in raw.items():
        if name not in fields and not extras:
            raise UserError(f"{name}: unknown field (valid: {', '.join(fields)})", source=source)
        if not isinstance(name, str) or not name.isidentifier():
            raise UserError(f"{name}: a param name must be an identifier", source=source)
        dims.append(_dimension(name, spec, source, seen, max_blocks))
        seen.append(name)
    space = Space(path=path, dimensions=tuple(dims))
    by_name = {d.name: d for d in space.dimensions}
    for trick in TRICKS:
        if trick.check_space:
            try:
                trick.check_space(by_name, base or TrainConfig())
            except ValueError as e:
                raise UserError(str(e), source=source) from None
    return space


def _dimension(name: str, spec: Any, source: str, seen: list[str],
               max_blocks: int | None) -> Dimension:
    def fail(key: str, problem: str, value: Any) -> UserError:
        return UserError(f"{name}{'.' + key if key else ''}: {problem}, got {value!r}",
                         source=source)

    if not isinstance(spec, dict):
        spec = {"value": spec}
    for key in spec:
        if key not in _SPEC_KEYS:
            raise fail(key, f"unknown key (valid: {', '.join(sorted(_SPEC_KEYS))})", spec[key])
    field = FIELDS.get(name) or _extra_field(name, spec)

    def valid(key: str, value: Any) -> Any:
        try:
            return field.check(value)
        except (TypeError, ValueError) as e:
            raise fail(key, str(e), value) from None

    when = _when(spec.get("when"), name, source, seen)
    if name not in FIELDS:
        for key in ("when", "optional"):  # Space.extras samples every param, always
            if spec.get(key):
                raise fail(key, "a trainer's own param is always sampled: no condition",
                           spec[key])
    optional = spec.get("optional", False)
    if not isinstance(optional, bool):
        raise fail("optional", "must be true or false", optional)
    kinds = [k for k in ("choices", "low", "value") if k in spec]
    if "high" in spec and "low" not in spec:
        raise fail("low", "a range needs low and high", None)
    if len(kinds) != 1:
        raise fail("", "give exactly one of choices, low/high, or value", spec)
    def blocks(key: str, value: Any) -> None:
        if field.max_blocks and max_blocks is not None and value is not None \
                and value > max_blocks:
            raise fail(key, f"the model has {max_blocks} blocks", value)

    if "value" in spec:
        value = valid("value", spec["value"])
        blocks("value", value)
        return Dimension(name, value=value, when=when, extra=name not in FIELDS)
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise fail("choices", "must be a non-empty list", choices)
        for c in choices:
            blocks("choices", valid("choices", c))
        if field.encode:  # Optuna categoricals hold scalars
            choices = [field.encode(valid("choices", c)) for c in choices]
        return Dimension(name, choices=tuple(choices), when=when, optional=optional,
                         extra=name not in FIELDS)
    low, high = spec.get("low"), spec.get("high")
    if high == "max" and field.max_blocks:
        if max_blocks is None:
            raise fail("high", "max needs the model's block count", high)
        high = max_blocks
    if high is None:
        raise fail("high", "a range needs low and high", None)
    if field.sample == "choice":
        raise fail("low", "this field takes choices or a value, not a range", low)
    low, high = valid("low", low), valid("high", high)
    if low >= high:
        raise UserError(f"{name}: low must be < high, got low={low!r}, high={high!r}",
                        source=source)
    blocks("high", high)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise fail("log", "must be true or false", log)
    if log and low <= 0:
        raise fail("low", "must be > 0 on a log scale", low)
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 \
                or not math.isfinite(step):
            raise fail("step", "must be a number > 0", step)
        if log:
            raise fail("step", "cannot be combined with log", step)
        if field.sample == "int" and (not isinstance(step, int) or isinstance(step, bool)):
            raise fail("step", "must be an integer for an integer field", step)
    return Dimension(name, low=low, high=high, log=log, step=step, when=when, optional=optional,
                     sample=field.sample, extra=name not in FIELDS)


def _when(raw: Any, name: str, source: str, seen: list[str]
          ) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{name}.when: must be a mapping of field: value(s), got {raw!r}",
                        source=source)
    out = []
    for key, vals in raw.items():
        if key not in TrainConfig.fields():
            raise UserError(f"{name}.when.{key}: unknown field, got {key!r}", source=source)
        if key not in seen:
            raise UserError(f"{name}.when.{key}: must refer to a dimension listed earlier, "
                            f"got {key!r}", source=source)
        vals = tuple(vals) if isinstance(vals, list) else (vals,)
        out.append((key, vals))
    return tuple(out)
