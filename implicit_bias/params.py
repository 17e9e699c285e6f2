"""Parameter constraint tables: every configurable factory declares what it accepts.

Validation happens when the configuration is built, before any step is taken, and every
failure raises :class:`ConfigError` with one message that names the parameter, the allowed
values and what was given, in the style of scikit-learn::

    The 'lr' parameter of schedule 'constant' must be a float in (0, inf). Got -1.0 instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ConfigError(ValueError):
    """A configuration value is invalid (raised before the run starts)."""


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Real:
    """A float in an interval; ``closed`` says which ends belong to it."""

    low: float = -math.inf
    high: float = math.inf
    closed: str = "neither"  # "left", "right", "both" or "neither"

    def describe(self) -> str:
        left = "[" if self.closed in ("left", "both") else "("
        right = "]" if self.closed in ("right", "both") else ")"
        return f"a float in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        x = float(value)
        if math.isnan(x):
            raise ValueError
        low_ok = x >= self.low if self.closed in ("left", "both") else x > self.low
        high_ok = x <= self.high if self.closed in ("right", "both") else x < self.high
        if not (low_ok and high_ok):
            raise ValueError
        return x


@dataclass(frozen=True)
class Integer:
    """An int in [low, high] (or null if optional)."""

    low: int = 0
    high: float = math.inf
    optional: bool = False

    def describe(self) -> str:
        return f"an int in [{self.low}, {_fmt(self.high)}]" + (" or null" if self.optional else "")

    def check(self, value: Any) -> int | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise TypeError
        if not self.low <= value <= self.high:
            raise ValueError
        return value


@dataclass(frozen=True)
class Boolean:
    optional: bool = False

    def describe(self) -> str:
        return "a bool (true or false) or null" if self.optional else "a bool (true or false)"

    def check(self, value: Any) -> bool | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, bool):
            raise TypeError
        return value


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def check(self, value: Any) -> str:
        if value not in self.options:
            raise ValueError
        return value


@dataclass(frozen=True)
class Vector:
    """A non-empty list of finite floats, returned as a float64 array; ``None`` if optional."""

    optional: bool = False

    def describe(self) -> str:
        text = "a non-empty list of finite floats"
        return text + " or null" if self.optional else text

    def check(self, value: Any) -> np.ndarray | None:
        if value is None and self.optional:
            return None
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise TypeError
        if len(value) == 0 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise TypeError
        array = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError
        return array


@dataclass(frozen=True)
class Matrix:
    """A non-empty rectangular list of lists of finite floats, returned as a 2-D float64 array."""

    def describe(self) -> str:
        return "a non-empty rectangular list of lists of finite floats (one list per equation)"

    def check(self, value: Any) -> np.ndarray:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or len(value) == 0:
            raise TypeError
        rows = [Vector().check(row) for row in value]
        if len({row.shape[0] for row in rows}) != 1:
            raise ValueError
        return np.stack(rows)


@dataclass(frozen=True)
class Text:
    """A non-empty string (a path, a name)."""

    def describe(self) -> str:
        return "a non-empty string"

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise TypeError
        return value


@dataclass(frozen=True)
class FiniteReal(Real):
    def describe(self) -> str:
        return "a finite float"


def _fmt(x: float) -> str:
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    return f"{x:g}"


@dataclass(frozen=True)
class Spec:
    """A configurable factory: the function to call and the constraints on its parameters."""

    factory: Callable[..., Any]
    params: Mapping[str, Any] = field(default_factory=dict)


def validate(kind: str, name: str, constraints: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``values`` against ``constraints``; return the converted values.

    ``kind`` and ``name`` only shape the message ("parameter of schedule 'constant'").
    Unknown and missing keys are errors too, so a typo in a YAML file is caught.
    """
    owner = f"{kind} '{name}'" if name else kind
    unknown = sorted(set(values) - set(constraints))
    if unknown:
        allowed = ", ".join(repr(k) for k in constraints) or "none"
        raise ConfigError(
            f"Unknown parameter {unknown[0]!r} for {owner}. Allowed parameters: {allowed}."
        )
    missing = [k for k in constraints if k not in values]
    if missing:
        raise ConfigError(f"The {missing[0]!r} parameter of {owner} is missing.")
    checked = {}
    for key, constraint in constraints.items():
        value = values[key]
        try:
            checked[key] = constraint.check(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"The {key!r} parameter of {owner} must be {constraint.describe()}. "
                f"Got {_describe(value)} instead."
            ) from None
    return checked


def build_from(kind: str, registry: Mapping[str, Spec], config: Mapping[str, Any]) -> tuple[str, dict[str, Any], Any]:
    """Look up ``config['name']`` in ``registry``, validate the rest, call the factory.

    Returns ``(name, validated_params, built_object)``.
    """
    values = dict(config)
    name = values.pop("name", None)
    if name not in registry:
        allowed = ", ".join(sorted(registry))
        raise ConfigError(f"Unknown {kind} {_describe(name)}. Allowed values: {allowed}.")
    spec = registry[name]
    params = validate(kind, name, spec.params, values)
    return name, params, spec.factory(**params)
