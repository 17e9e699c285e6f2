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
row, with status ``missing``; one whose ``result.json`` does not read back (empty, truncated)
becomes a row with status ``damaged`` that says what is wrong, and a damaged
``trajectory.npz`` is named under the table. ``implicit-bias-summarize DIR...`` rebuilds all
of it for existing sweep directories.

The same callback guards the records before Hydra writes anything: a run or sweep directory
that is a file, lies under a file, is not writable, or already holds another run's records
is refused with one line (exit code 2). Each run directory holds one run, so a
``result.json`` never sits beside another run's ``.hydra/config.yaml``.
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

from .results import (
    RESULT_FILE, TRAJECTORY_FILE, DamagedFile, OutputDirError, atomic_write, failure_record, os_reason, output_dir_problem,
    read_record, read_trajectory,
)

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


def _job_config(job_dir: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """(config, overrides, problems) from the files Hydra saved for a job; a file that does not
    read back is a problem, and its part stays empty."""
    from omegaconf import OmegaConf

    hydra_dir, problems = job_dir / ".hydra", []
    config: dict[str, Any] = {}
    overrides: list[str] = []
    for name in ("config.yaml", "overrides.yaml"):
        path = hydra_dir / name
        if not path.exists():
            continue
        try:
            loaded = OmegaConf.to_container(OmegaConf.load(path))
        except Exception as err:  # noqa: BLE001 - yaml and OmegaConf errors alike mean "damaged"
            problems.append(f".hydra/{name} is damaged ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
            continue
        if name == "config.yaml" and isinstance(loaded, dict):
            config = loaded
            absent = [group for group in ("dataset", "optimizer", "schedule") if not isinstance(loaded.get(group), dict)]
            if absent:  # a truncated file can still parse
                problems.append(f".hydra/{name} is damaged (truncated? no {', '.join(absent)} group)")
        elif name == "overrides.yaml" and isinstance(loaded, list):
            overrides = [str(o) for o in loaded]
        else:
            problems.append(f".hydra/{name} is damaged (it holds a {type(loaded).__name__})")
    return config, overrides, problems


def _missing_record(job_dir: Path) -> dict[str, Any]:
    """The row of a job that left no result.json, from the config Hydra saved for it."""
    config, overrides, problems = _job_config(job_dir)
    message = "no result.json: the job was killed before writing its record, could not write it, or is still running"
    return failure_record(config, overrides, "missing", "; ".join([message, *problems]))


def _study_name(path: Path) -> str | None:
    """The study a result.json belongs to (implicit_bias.studies), or None."""
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    study = record.get("study") if isinstance(record, dict) else None
    return study if isinstance(study, str) else None


def _damaged_record(job_dir: Path, damage: str) -> dict[str, Any]:
    """The row of a job whose result.json does not read back, from the config Hydra saved for it."""
    config, overrides, problems = _job_config(job_dir)
    return failure_record(config, overrides, "damaged", "; ".join([damage, *problems]))


def collect(sweep_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(job directory name, record) for every job of a sweep, in job order.

    A missing ``result.json`` gives a ``missing`` row, one that does not read back a
    ``damaged`` row whose message says what is wrong; a ``trajectory.npz`` that does not read
    back is noted in the record's ``message`` and in :func:`damage_notes`.
    """
    found = []
    for job_dir in _job_dirs(sweep_dir):
        path = job_dir / RESULT_FILE
        if not path.exists():
            found.append((job_dir.name, _missing_record(job_dir)))
            continue
        try:
            record = read_record(path)
        except DamagedFile as err:
            study = _study_name(path)
            if study is not None:  # a study's record is complete, just not a run record
                config, overrides, problems = _job_config(job_dir)
                message = (f"the {study} study's record: its estimates are in {job_dir.name}/summary.csv and "
                           f"{job_dir.name}/result.json")
                found.append((job_dir.name, failure_record(config, overrides, "study", message)))
            else:
                found.append((job_dir.name, _damaged_record(job_dir, str(err))))
            continue
        trajectory = job_dir / TRAJECTORY_FILE
        if trajectory.exists():
            try:
                read_trajectory(trajectory)
            except DamagedFile as err:
                record["message"] = f"{record['message']} [{err}; steps_within_tol and its curves are left out]"
                record[_DAMAGE] = str(err)
        found.append((job_dir.name, record))
    return found


_DAMAGE = "_damaged_trajectory"  # set by collect() on a record whose trajectory.npz does not read back


def damage_notes(jobs: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """One line per job whose files are damaged: what is wrong with them."""
    notes = []
    for job, record in jobs:
        if record["status"] == "damaged":
            notes.append(f"job {job}: {record['message']}")
        elif record.get(_DAMAGE):
            notes.append(f"job {job}: {record[_DAMAGE]}; its record is intact")
    return notes


def _user_overrides(record: Mapping[str, Any]) -> dict[str, str]:
    """The job's overrides as key → value, without Hydra's own (hydra.*, hydra/...)."""
    pairs = (o.split("=", 1) for o in record.get("overrides", []) if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs if not k.lstrip("+~").startswith("hydra")}


def steps_within_tolerance(job_dir: Path, record: Mapping[str, Any]) -> int | None:
    """First recorded step from which the distance to the prediction stays within the verdict
    tolerance (recorded steps are log-spaced, so this is accurate to about 5 %)."""
    path = job_dir / TRAJECTORY_FILE
    if record.get("prediction") is None or record.get(_DAMAGE) or not path.exists():
        return None
    try:
        arrays = read_trajectory(path)
    except DamagedFile:
        return None
    steps, theta, prediction = arrays["step"], arrays["theta"], arrays.get("prediction")
    if prediction is None or prediction.shape != theta.shape[1:]:
        return None
    # a converged run: the max-abs error its match may have. Any other run: verdict_tol relative
    # to the verdict's scale (a non-converged run's own tolerance grows with its final gradient)
    absolute = record.get("verdict_tolerance") if record.get("status") == "converged" else None
    if absolute is None:
        scale = record.get("verdict_scale") or max(float(np.max(np.abs(prediction))),
                                                   float(np.max(np.abs(theta[0])))) or 1.0
        absolute = record["settings"]["verdict_tol"] * scale
    with np.errstate(invalid="ignore"):
        inside = np.max(np.abs(theta - prediction), axis=1) <= absolute
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
            str(record["optimizer"].get("name") or "—"),
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
    damage = "".join(f"\ndamaged: {note}" for note in damage_notes(jobs))
    atomic_write(sweep_dir / SUMMARY_MD, f"# Sweep {sweep_dir}\n\n{len(jobs)} jobs: {tally}\n\n{text}\n{damage.lstrip()}\n".encode())
    problems = _write_figures(sweep_dir, jobs, table) if figures and jobs else []
    notes = "".join(f"\nwarning: figure {p}; the summary is complete" for p in problems)
    return f"{len(jobs)} jobs: {tally}\n{text}{damage}{notes}"


def _figure_problem(name: str, err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{name} not written ({type(err).__name__}{': ' + lines[0] if lines else ''})"


def _write_figures(sweep_dir: Path, jobs: list, table: list[dict[str, Any]]) -> list[str]:
    """Write the sweep's figures; a figure that fails is reported, never fatal to the summary."""
    from .plotting import render_sweep, render_sweep_parameter, render_sweep_references

    problems = []
    swept = varying_overrides(jobs)
    labels = [", ".join(f"{k}={v}" for k, v in o.items()) or f"job {job}" for o, (job, _) in zip(swept, jobs)]
    try:
        atomic_write(sweep_dir / SWEEP_FIGURE, render_sweep(sweep_dir, jobs, labels))
    except Exception as err:  # noqa: BLE001 - a figure must not cost the sweep its table
        problems.append(_figure_problem(SWEEP_FIGURE, err))
    with_references = [(row, label) for row, label, (_, record) in zip(table, labels, jobs) if record.get("references")]
    if with_references and len(with_references) <= REFERENCE_FIGURE_LIMIT:
        try:
            rows_, labels_ = zip(*with_references)
            atomic_write(sweep_dir / REFERENCE_FIGURE, render_sweep_references(rows_, labels_))
        except Exception as err:  # noqa: BLE001
            problems.append(_figure_problem(REFERENCE_FIGURE, err))
    numeric = swept_numeric_key(swept)
    if numeric is not None:
        key, others = numeric
        name = f"sweep_{key.replace('/', '_')}.png"
        ran = [{**row, **o} for row, o in zip(table, swept) if row["steps"] is not None]
        try:
            if ran:
                atomic_write(sweep_dir / name, render_sweep_parameter(ran, key, others, len(table) - len(ran)))
        except Exception as err:  # noqa: BLE001
            problems.append(_figure_problem(name, err))
    return problems


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra-core is a dependency
    Callback = object


#: the sweep directory of the multirun in progress in this process (set when it starts), so
#: that a sweep that stops part-way can still be summarized (``implicit_bias.app.main``)
active_sweep: Path | None = None


def _refuse(message: str) -> None:
    print(f"implicit-bias: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def claim_run_dir(run_dir: Path, output_subdir: str | None) -> None:
    """Refuse (:class:`OutputDirError`) a run directory that cannot hold the run's records or
    already holds another run's; else claim it by creating ``output_subdir`` (``.hydra``).

    The claim is atomic (``mkdir`` fails if the directory exists), so of two runs started
    into the same directory at once, exactly one proceeds: a ``result.json`` can never sit
    beside another run's ``.hydra/config.yaml``.
    """
    problem = output_dir_problem(run_dir)
    if problem is not None:
        raise OutputDirError(f"{problem}; choose another hydra.run.dir")
    if (run_dir / RESULT_FILE).exists():
        raise OutputDirError(f"the run directory {run_dir} already holds a record ({RESULT_FILE}); "
                             f"choose another hydra.run.dir")
    if output_subdir is None:
        return
    try:
        (run_dir / output_subdir).mkdir()
    except FileExistsError:
        raise OutputDirError(f"the run directory {run_dir} already holds another run ({output_subdir}/, "
                             f"a run started there before); choose another hydra.run.dir") from None
    except OSError as err:
        raise OutputDirError(f"the run directory {run_dir} is not writable: {os_reason(err)}; "
                             f"choose another hydra.run.dir") from None


def check_sweep_dir(sweep_dir: Path) -> None:
    """Refuse (:class:`OutputDirError`) a sweep directory that cannot hold the jobs' records,
    or that already holds another sweep's (job directories or ``multirun.yaml``)."""
    problem = output_dir_problem(sweep_dir)
    if problem is not None:
        raise OutputDirError(f"{problem}; choose another hydra.sweep.dir")
    jobs = _job_dirs(sweep_dir)
    if jobs or (sweep_dir / "multirun.yaml").exists():
        held = ", ".join(f"{p.name}/" for p in jobs[:3]) + (", …" if len(jobs) > 3 else "") or "multirun.yaml"
        raise OutputDirError(f"the sweep directory {sweep_dir} already holds another sweep ({held}); "
                             f"choose another hydra.sweep.dir")


class SummaryCallback(Callback):
    """Guard the output directories when a run or multirun starts; print and save the sweep's
    summary when a multirun ends."""

    def on_run_start(self, config, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)  # as run_job does first, for ${hydra:...} in the directory
        try:
            run_dir = Path(str(config.hydra.run.dir))
        except Exception:  # noqa: BLE001 - a directory that does not resolve is Hydra's to report
            return
        try:
            claim_run_dir(run_dir, config.hydra.output_subdir)
        except OutputDirError as err:
            _refuse(str(err))

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        global active_sweep
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        except Exception:  # noqa: BLE001
            return
        try:
            check_sweep_dir(sweep_dir)
        except OutputDirError as err:
            _refuse(str(err))
        active_sweep = sweep_dir

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        try:
            text = summarize(sweep_dir, figures=bool(config.get("sweep_figures", True)))
        except OSError as err:
            _refuse(f"the job records in {sweep_dir} are kept, but their summary could not be written: "
                    f"{err if hasattr(err, 'cause') else os_reason(err)}")
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
        try:
            text = summarize(sweep_dir, figures=not args.no_figures)
        except OSError as err:
            print(f"implicit-bias-summarize: error: the summary of {sweep_dir} could not be written: "
                  f"{err if hasattr(err, 'cause') else os_reason(err)}", file=sys.stderr)
            status = 2
            continue
        print(f"{sweep_dir}:\n{text}\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
