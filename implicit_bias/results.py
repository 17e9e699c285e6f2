"""Records on disk: ``result.json`` and ``trajectory.npz``, both written atomically.

A record is a plain dict of JSON types. Non-finite floats (a run that blew up) are written
as ``null``, never as the non-standard ``NaN``/``Infinity`` tokens, so every record parses
with any JSON reader; the ``status`` field says why a number is missing.

Faults around records are one clear sentence each, never a traceback:
:class:`RecordWriteError` (a write that failed: disk full, permission denied; no partial
file is left), :class:`OutputDirError` (an output directory that cannot hold a run, or that
already holds one) and :class:`DamagedFile` (a record or trajectory that does not read back).
"""

from __future__ import annotations

import errno
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


class RecordWriteError(OSError):
    """A file could not be written. Its message names the file and the reason, and says that
    no partial file was left (the temporary file is removed); ``errno`` is the cause's."""

    def __init__(self, path: Path, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path, self.cause = Path(path), cause

    def __str__(self) -> str:
        return f"could not write {self.path}: {os_reason(self.cause)}; no partial file was left"


class OutputDirError(OSError):
    """An output directory that cannot hold a run's records, or already holds another run's."""


class DamagedFile(ValueError):
    """A record or trajectory on disk that does not read back as one (truncated, empty, corrupt)."""


def os_reason(err: OSError) -> str:
    """'no space left on device (ENOSPC)': the reason of an OSError in words, with its code."""
    code = errno.errorcode.get(err.errno, "") if err.errno is not None else ""
    words = (err.strerror or str(err)).rstrip(".")
    words = words[:1].lower() + words[1:]
    return f"{words} ({code})" if code else words


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over ``path``.

    A reader never sees a partial file: ``path`` is either its old content or all of
    ``data``. On failure the temporary file is removed and :class:`RecordWriteError` (an
    OSError with the same errno) names ``path`` and the reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise RecordWriteError(path, err) from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, RecordWriteError):
            raise RecordWriteError(path, err) from err
        raise


def output_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an output directory (None if it can): it is a file, lies under
    a file, cannot be created, or is not writable. Creates the directory if it is missing.

    Writability is tried with a real temporary file, not ``os.access``: root passes every
    permission test of ``os.access``, and a read-only file system fails only on writing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"the output directory {path} is a file, not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        above = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        where = f" ({above} is a file)" if above is not None else ""
        return f"the output directory {path} lies under a file{where}, so it cannot be created"
    except OSError as err:
        return f"the output directory {path} cannot be created: {os_reason(err)}"
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        return f"the output directory {path} is not writable: {os_reason(err)}"
    return None


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    atomic_write(Path(path), (json.dumps(record, indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode())


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


#: fields :func:`read_record` requires of a record, and of which type
RECORD_FIELDS = {
    "dataset": Mapping, "optimizer": Mapping, "schedule": Mapping, "settings": Mapping, "overrides": list,
    "status": str, "message": str, "steps": (int, type(None)), "wall_time_s": (int, float, type(None)),
    "limit": (list, type(None)), "prediction": (list, type(None)), "error": (int, float, type(None)),
    "relative_error": (int, float, type(None)), "verdict": str,
}


def read_record(path: Path) -> dict[str, Any]:
    """A ``result.json`` read back, or :class:`DamagedFile` saying what is wrong with it
    (empty, truncated, not JSON, or JSON that is not a record)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DamagedFile(f"{path.name} cannot be read: {os_reason(err)}") from err
    if not data.strip():
        raise DamagedFile(f"{path.name} is empty")
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedFile(f"{path.name} is not valid JSON (truncated?): {err}") from err
    if not isinstance(record, dict):
        raise DamagedFile(f"{path.name} holds a JSON {type(record).__name__}, not a record")
    wrong = [k for k, kind in RECORD_FIELDS.items() if not isinstance(record.get(k), kind) or k not in record]
    if wrong:
        raise DamagedFile(f"{path.name} is not a complete record (missing or wrong: {', '.join(wrong)})")
    if not all("name" in record[group] for group in ("dataset", "optimizer", "schedule")):
        raise DamagedFile(f"{path.name} is not a complete record (a group without its name)")
    return record


def read_trajectory(path: Path) -> dict[str, np.ndarray]:
    """``trajectory.npz`` read back as arrays, or :class:`DamagedFile` saying what is wrong
    (not an npz, truncated, or arrays missing or of inconsistent shapes)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # noqa: BLE001 - zipfile, numpy and OS errors all mean "damaged"
        raise DamagedFile(f"{path.name} cannot be read: {type(err).__name__}: {err}") from err
    missing = [k for k in ("step", "theta", "loss", "limit") if k not in arrays]
    if missing:
        raise DamagedFile(f"{path.name} lacks the arrays {', '.join(missing)}")
    step, theta = arrays["step"], arrays["theta"]
    if step.ndim != 1 or theta.ndim != 2 or theta.shape[0] != step.shape[0] or arrays["limit"].shape != theta.shape[1:]:
        raise DamagedFile(f"{path.name} has arrays of inconsistent shapes (step {step.shape}, theta {theta.shape})")
    return arrays


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
