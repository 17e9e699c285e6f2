"""Config → objects: validate every value and build the problem, optimizer and schedule.

This is the only module that knows the shape of the composed config (``conf/config.yaml``).
Everything is checked here, before the first step, so bad input fails in milliseconds with
one :class:`~implicit_bias.params.ConfigError` message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .optimizers import OPTIMIZERS
from .params import Boolean, ConfigError, Real, build_from, validate
from .problems import DATASETS, Problem
from .runner import SETTINGS, RunSettings
from .schedules import SCHEDULES

GROUPS = {"dataset": DATASETS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}

TOP_LEVEL = {
    **SETTINGS,
    "figure": Boolean(),
    "sweep_figures": Boolean(),
    "progress": Boolean(optional=True),
    "progress_every_s": Real(0.0),
    "verdict_tol": Real(0.0),
}


class Part(NamedTuple):
    """One chosen config group option: its name, validated parameters and built object."""

    name: str
    params: dict[str, Any]
    built: Any


class Experiment(NamedTuple):
    dataset: Part  # built: a Problem
    optimizer: Part  # built: an Optimizer
    schedule: Part  # built: a Schedule (step array -> rate array)
    settings: RunSettings
    figure: bool
    verdict_tol: float
    progress: bool | None  # None: on for single runs, off in multirun jobs
    progress_every_s: float

    @property
    def problem(self) -> Problem:
        return self.dataset.built

    @property
    def seed(self) -> int:
        return self.settings.seed


def build(config: Mapping[str, Any]) -> Experiment:
    """Validate a composed config (a plain dict, interpolations resolved) and build it.

    The cheap parts (run settings, schedule, optimizer) are checked first and the dataset
    last, so a bad value is refused before a large dataset is generated or read."""
    top = validate("the run settings", "", TOP_LEVEL, {k: v for k, v in config.items() if k not in GROUPS})
    parts = {}
    for group in ("schedule", "optimizer", "dataset"):
        node = config.get(group)
        if not isinstance(node, Mapping):
            raise ConfigError(f"The config has no {group!r} group; choose one with {group}=NAME.")
        parts[group] = Part(*build_from(group, GROUPS[group], node))
    d = parts["dataset"].built.A.shape[1]
    dimension = parts["optimizer"].built.dimension
    if dimension is not None and dimension != d:
        raise ConfigError(f"The optimizer {parts['optimizer'].name!r} is configured for {dimension} parameters, "
                          f"but dataset {parts['dataset'].name!r} has d = {d}.")
    settings = RunSettings(**{key: top[key] for key in SETTINGS})
    return Experiment(
        parts["dataset"], parts["optimizer"], parts["schedule"], settings,
        top["figure"], top["verdict_tol"], top["progress"], top["progress_every_s"],
    )
