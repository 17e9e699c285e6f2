"""Readable summaries: one run on the console, and the whole sweep after a multirun.

After every multirun, :class:`SummaryCallback` (a Hydra callback, ``hydra.callbacks`` in
``conf/config.yaml``) reads every job's ``result.json`` from the sweep directory and writes,
beside the jobs:

``summary.csv``  one row per job: each override as its own column, then the record's fields
``summary.md``   the same as a Markdown table (also printed)
``sweep_trajectories.png``  every run's path and distance to its prediction in one figure
``sweep_references.png``  each run's distance to its prediction and to the reference interpolants
``sweep_<key>.png``  when exactly one numeric override varies: error and steps against it

A job directory without ``result.json`` (a job killed before it could write) still becomes a
row, with status ``missing``. ``implicit-bias-summarize DIR...`` rebuilds all of it for
existing sweep directories.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .results import RESULT_FILE, TRAJECTORY_FILE, atomic_write, failure_record, read_json

SHOWN_COORDINATES = 6
TABLE_COLUMNS = ("job", "swept", "optimizer", "schedule", "limit", "prediction", "error", "verdict", "steps", "status")
CSV_FIELDS = (
    "optimizer", "dataset", "schedule", "status", "steps", "error", "relative_error", "verdict",
    "steps_within_tol", "wall_time_s", "limit", "prediction", "message",
)
REFERENCE_NAMES = ("min_l2", "min_l1", "min_linf")  # a column distance_to_NAME each
SUMMARY_CSV, SUMMARY_MD, SWEEP_FIGURE = "summary.csv", "summary.md", "sweep_trajectories.png"
REFERENCE_FIGURE, REFERENCE_FIGURE_LIMIT = "sweep_references.png", 40  # one bar group per run


def format_vector(values: Sequence[float | None] | None, digits: int = 6) -> str:
    if values is None:
        return "—"
    shown = ", ".join("nan" if v is None else f"{v:.{digits}g}" for v in values[:SHOWN_COORDINATES])
    more = f", … ({len(values)} total)" if len(values) > SHOWN_COORDINATES else ""
    return f"[{shown}{more}]"


def format_error(error: float | None) -> str:
    return "—" if error is None else f"{error:.1e}"


def describe(part: Mapping[str, Any]) -> str:
    """'exponential(lr=0.1, gamma=0.95)' from a record's group entry."""
    params = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in part.items() if k not in ("name", "conventions")
    )
    return f"{part['name']}({params})" if params else str(part["name"])


def run_summary(record: Mapping[str, Any], out_dir: Path | None = None) -> str:
    """A few lines for the console after one run."""
    lines = [
        f"{record['optimizer']['name']} on {record['dataset']['name']} with schedule "
        f"{describe(record['schedule'])}: {record['status']} after {record['steps']} steps "
        f"({1e3 * record['wall_time_s']:.1f} ms)",
        f"  {record['message']}",
        f"  limit      {format_vector(record['limit'], 12)}",
    ]
    if record["prediction"] is None:
        lines.append(f"  prediction none: {record['no_prediction_reason']}")
    else:
        lines += [
            f"  prediction {format_vector(record['prediction'], 12)}",
            f"             {record['prediction_formula']}",
            f"             source: {record['prediction_source']}",
        ]
        if record.get("approximation"):
            lines.append(f"             approximate: {record['approximation']}")
    tol = record.get("verdict_tol_used") or record["settings"]["verdict_tol"]
    relative = "" if record["relative_error"] is None else f", relative {record['relative_error']:.1e}"
    lines.append(f"  error {format_error(record['error'])} (max-abs{relative}; tolerance {tol:g} relative): {record['verdict']}")
    if out_dir is not None:
        lines.append(f"  records in {out_dir}")
    return "\n".join(lines)


# ---------------------------------------------------------------- reading a sweep


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Directories of a sweep that belong to a job (they have a record or Hydra's job config)."""
    dirs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and ((p / RESULT_FILE).exists() or (p / ".hydra").is_dir())]
    return sorted(dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _missing_record(job_dir: Path) -> dict[str, Any]:
    """The row of a job that left no result.json, from the config Hydra saved for it."""
    from omegaconf import OmegaConf

    hydra_dir = job_dir / ".hydra"
    overrides = [str(o) for o in OmegaConf.load(hydra_dir / "overrides.yaml")] if (hydra_dir / "overrides.yaml").exists() else []
    config = OmegaConf.to_container(OmegaConf.load(hydra_dir / "config.yaml")) if (hydra_dir / "config.yaml").exists() else {}
    message = "no result.json: the job was killed before writing its record, or is still running"
    return failure_record(config, overrides, "missing", message)


def collect(sweep_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(job directory name, record) for every job of a sweep, in job order."""
    found = []
    for job_dir in _job_dirs(sweep_dir):
        path = job_dir / RESULT_FILE
        found.append((job_dir.name, read_json(path) if path.exists() else _missing_record(job_dir)))
    return found


def _user_overrides(record: Mapping[str, Any]) -> dict[str, str]:
    """The job's overrides as key → value, without Hydra's own (hydra.*, hydra/...)."""
    pairs = (o.split("=", 1) for o in record.get("overrides", []) if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs if not k.lstrip("+~").startswith("hydra")}


def steps_within_tolerance(job_dir: Path, record: Mapping[str, Any]) -> int | None:
    """First recorded step from which the distance to the prediction stays within the verdict
    tolerance (recorded steps are log-spaced, so this is accurate to about 5 %)."""
    path = job_dir / TRAJECTORY_FILE
    if record.get("prediction") is None or not path.exists():
        return None
    with np.load(path) as npz:
        steps, theta = npz["step"], npz["theta"]
        prediction = npz["prediction"] if "prediction" in npz else None
    if prediction is None:
        return None
    scale = max(float(np.max(np.abs(prediction))), float(np.max(np.abs(theta[0])))) or 1.0
    with np.errstate(invalid="ignore"):
        tol = record.get("verdict_tol_used") or record["settings"]["verdict_tol"]
        inside = np.max(np.abs(theta - prediction), axis=1) <= tol * scale
    if not inside[-1]:
        return None
    outside = np.flatnonzero(~inside)
    return int(steps[outside[-1] + 1]) if outside.size else int(steps[0])


def rows(sweep_dir: Path, jobs: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[list[str], list[dict[str, Any]]]:
    """CSV columns and one row per job: the override keys first, then :data:`CSV_FIELDS`."""
    jobs = list(jobs)
    swept = varying_overrides(jobs) if len(jobs) > 1 else [_user_overrides(r) for _, r in jobs]
    keys: list[str] = []
    for o in swept:  # an override of a group (optimizer=sgd) is already a field of its own
        keys += [k for k in o if k not in keys and k not in CSV_FIELDS]
    table = []
    for job, record in jobs:
        row: dict[str, Any] = {"job": job, **{k: _user_overrides(record).get(k, "") for k in keys}}
        row["_swept"] = ", ".join(f"{k}={v}" for k, v in _user_overrides(record).items() if k in keys)
        row.update(
            optimizer=record["optimizer"]["name"],
            dataset=record["dataset"]["name"],
            schedule=describe(record["schedule"]) if record["schedule"].get("name") else "",
            status=record["status"],
            steps=record["steps"],
            error=record["error"],
            relative_error=record["relative_error"],
            verdict=record["verdict"],
            steps_within_tol=steps_within_tolerance(Path(sweep_dir) / job, record),
            wall_time_s=record["wall_time_s"],
            limit=json.dumps(record["limit"]),
            prediction=json.dumps(record["prediction"]),
            message=record["message"],
        )
        table.append(row)
        for name in REFERENCE_NAMES:
            reference = record.get("references", {}).get(name)
            row[f"distance_to_{name}"] = None if reference is None else reference["distance"]
    return ["job", *keys, *CSV_FIELDS, *(f"distance_to_{name}" for name in REFERENCE_NAMES)], table


def markdown(jobs: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """A Markdown table, one row per run; ``swept`` holds the overrides that differ between jobs."""
    jobs = list(jobs)
    swept = varying_overrides(jobs) if len(jobs) > 1 else [{} for _ in jobs]
    body = []
    for (job, record), own in zip(jobs, swept):
        body.append((
            job,
            ", ".join(f"{k}={v}" for k, v in own.items() if k not in ("optimizer", "schedule")) or "—",
            str(record["optimizer"]["name"]),
            describe(record["schedule"]) if record["schedule"].get("name") else "—",
            format_vector(record["limit"]),
            format_vector(record["prediction"]),
            format_error(record["error"]),
            record["verdict"],
            "—" if record["steps"] is None else str(record["steps"]),
            record["status"],
        ))
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(TABLE_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(TABLE_COLUMNS), rule, *(line(r) for r in body)])


# ---------------------------------------------------------------- writing a sweep's summary


def _numeric(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def varying_overrides(jobs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, str]]:
    """Per job, the overrides whose values differ across the sweep (what tells the runs apart)."""
    overrides = [_user_overrides(record) for _, record in jobs]
    keys: list[str] = []
    for o in overrides:
        keys += [k for k in o if k not in keys]
    varying = [k for k in keys if len({o.get(k, "") for o in overrides}) > 1]
    return [{k: o.get(k, "") for k in varying} for o in overrides]


def swept_numeric_key(swept: Sequence[Mapping[str, str]]) -> tuple[str, list[str]] | None:
    """The one varying override with only numeric values, and the other varying keys, if so."""
    if not swept:
        return None
    numeric = [k for k in swept[0] if all(_numeric(o[k]) is not None for o in swept)]
    if len(numeric) != 1:
        return None
    return numeric[0], [k for k in swept[0] if k != numeric[0]]


def summarize(sweep_dir: Path, figures: bool = True) -> str:
    """Write the sweep's CSV, Markdown and figures beside its jobs; return the Markdown table."""
    sweep_dir = Path(sweep_dir)
    jobs = collect(sweep_dir)
    columns, table = rows(sweep_dir, jobs)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items() if k in columns} for row in table)
    atomic_write(sweep_dir / SUMMARY_CSV, buffer.getvalue().encode())
    text = markdown(jobs)
    counts = {}
    for _, record in jobs:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    atomic_write(sweep_dir / SUMMARY_MD, f"# Sweep {sweep_dir}\n\n{len(jobs)} jobs: {tally}\n\n{text}\n".encode())
    problems = _write_figures(sweep_dir, jobs, table) if figures and jobs else []
    notes = "".join(f"\n(figure not written: {p})" for p in problems)
    return f"{len(jobs)} jobs: {tally}\n{text}{notes}"


def _write_figures(sweep_dir: Path, jobs: list, table: list[dict[str, Any]]) -> list[str]:
    """Write the sweep's figures; a figure that fails is reported, never fatal to the summary."""
    from .plotting import render_sweep, render_sweep_parameter, render_sweep_references

    problems = []
    swept = varying_overrides(jobs)
    labels = [", ".join(f"{k}={v}" for k, v in o.items()) or f"job {job}" for o, (job, _) in zip(swept, jobs)]
    try:
        atomic_write(sweep_dir / SWEEP_FIGURE, render_sweep(sweep_dir, jobs, labels))
    except Exception as err:  # noqa: BLE001 - a figure must not cost the sweep its table
        problems.append(f"{SWEEP_FIGURE}: {type(err).__name__}: {err}")
    with_references = [(row, label) for row, label, (_, record) in zip(table, labels, jobs) if record.get("references")]
    if with_references and len(with_references) <= REFERENCE_FIGURE_LIMIT:
        try:
            rows_, labels_ = zip(*with_references)
            atomic_write(sweep_dir / REFERENCE_FIGURE, render_sweep_references(rows_, labels_))
        except Exception as err:  # noqa: BLE001
            problems.append(f"{REFERENCE_FIGURE}: {type(err).__name__}: {err}")
    numeric = swept_numeric_key(swept)
    if numeric is not None:
        key, others = numeric
        name = f"sweep_{key.replace('/', '_')}.png"
        ran = [{**row, **o} for row, o in zip(table, swept) if row["steps"] is not None]
        try:
            if ran:
                atomic_write(sweep_dir / name, render_sweep_parameter(ran, key, others, len(table) - len(ran)))
        except Exception as err:  # noqa: BLE001
            problems.append(f"{name}: {type(err).__name__}: {err}")
    return problems


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra-core is a dependency
    Callback = object


class SummaryCallback(Callback):
    """Print and save the sweep's summary when a multirun ends."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        text = summarize(sweep_dir, figures=bool(config.get("sweep_figures", True)))
        print(f"\nSweep summary ({sweep_dir / SUMMARY_MD}):\n{text}")


def main(argv: Sequence[str] | None = None) -> int:
    """``implicit-bias-summarize DIR...``: rebuild the summary files of existing sweeps."""
    parser = argparse.ArgumentParser(
        prog="implicit-bias-summarize",
        description="Write summary.csv, summary.md and the comparison figures of existing sweep directories.",
    )
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="DIR", help="a multirun's sweep directory")
    parser.add_argument("--no-figures", action="store_true", help="write only summary.csv and summary.md")
    args = parser.parse_args(argv)
    status = 0
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir() or not _job_dirs(sweep_dir):
            print(f"implicit-bias-summarize: error: {sweep_dir} is not a sweep directory (no job directories in it)",
                  file=sys.stderr)
            status = 2
            continue
        print(f"{sweep_dir}:\n{summarize(sweep_dir, figures=not args.no_figures)}\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
