"""Records on disk: ``result.json`` and ``trajectory.npz``, both written atomically.

A record is a plain dict of JSON types. Non-finite floats (a run that blew up) are written
as ``null``, never as the non-standard ``NaN``/``Infinity`` tokens, so every record parses
with any JSON reader; the ``status`` field says why a number is missing.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import platform
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .build import Experiment
from .predictions import Comparison, Prediction
from .runner import RunResult

_UMASK = os.umask(0)
os.umask(_UMASK)

RESULT_FILE = "result.json"
TRAJECTORY_FILE = "trajectory.npz"
FIGURE_FILE = "trajectory.png"

_DISTRIBUTIONS = ("implicit-bias", "numpy", "scipy", "matplotlib", "hydra-core", "omegaconf")


@functools.lru_cache(maxsize=None)
def _versions() -> tuple[tuple[str, str | None], ...]:
    versions = [("python", platform.python_version())]
    for name in _DISTRIBUTIONS:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            versions.append((name, None))
    return tuple(versions)


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages that can change a result (read without importing
    them; read once per process, as a sweep's jobs share it)."""
    return dict(_versions())


def jsonable(value: Any) -> Any:
    """Arrays → lists, numpy scalars → Python, non-finite floats → None."""
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def make_record(
    experiment: Experiment,
    result: RunResult,
    prediction: Prediction,
    comparison: Comparison,
    references: Mapping[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """The ``result.json`` content of one run."""
    record = {
        "dataset": {"name": experiment.dataset.name, **experiment.dataset.params, "theta0": experiment.problem.theta0},
        "optimizer": {
            "name": experiment.optimizer.name,
            **experiment.optimizer.params,
            "conventions": dict(experiment.optimizer.built.conventions),
        },
        "schedule": {"name": experiment.schedule.name, **experiment.schedule.params},
        "settings": {**experiment.settings._asdict(), "verdict_tol": experiment.verdict_tol},
        "overrides": list(overrides or []),
        "status": result.status,
        "message": result.message,
        "steps": result.steps,
        "wall_time_s": result.wall_time_s,
        "final_loss": result.final_loss,
        "final_step_norm": result.step_norm,
        "final_grad_norm": result.grad_norm,
        "limit": result.theta,
        "prediction": prediction.point,
        "prediction_formula": prediction.formula or None,
        "prediction_source": prediction.source or None,
        "no_prediction_reason": prediction.reason or None,
        "prediction_exact": prediction.exact if prediction.point is not None else None,
        "approximation": prediction.approximation or None,
        "error": comparison.error,
        "relative_error": comparison.relative_error,
        "verdict": comparison.verdict,
        "references": dict(references or {}),
        "seed": experiment.seed,
        "versions": package_versions(),
    }
    return jsonable(record)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    atomic_write(Path(path), (json.dumps(record, indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode())


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def write_trajectory(path: Path, result: RunResult, prediction: Prediction) -> None:
    """``trajectory.npz``: step, theta, loss, lr at the recorded steps, plus limit and prediction."""
    buffer = io.BytesIO()
    arrays = dict(result.trajectory._asdict(), limit=result.theta)
    if prediction.point is not None:
        arrays["prediction"] = prediction.point
    np.savez(buffer, **arrays)
    atomic_write(Path(path), buffer.getvalue())


def failure_record(config: Mapping[str, Any], overrides: list[str], status: str, message: str) -> dict[str, Any]:
    """The record of a job that could not run (bad input or an unexpected error).

    It has every field of a normal record, with nulls where no number exists.
    """

    def chosen(group: str) -> dict[str, Any]:
        node = config.get(group)
        return dict(node) if isinstance(node, Mapping) else {"name": None}

    record = {
        "dataset": chosen("dataset"),
        "optimizer": chosen("optimizer"),
        "schedule": chosen("schedule"),
        "settings": {k: v for k, v in config.items() if not isinstance(v, Mapping)},
        "overrides": list(overrides),
        "status": status,
        "message": message,
        "steps": None,
        "wall_time_s": None,
        "final_loss": None,
        "final_step_norm": None,
        "final_grad_norm": None,
        "limit": None,
        "prediction": None,
        "prediction_formula": None,
        "prediction_source": None,
        "no_prediction_reason": None,
        "prediction_exact": None,
        "approximation": None,
        "error": None,
        "relative_error": None,
        "verdict": "not_run",
        "references": {},
        "seed": config.get("seed"),
        "versions": package_versions(),
    }
    return jsonable(record)
