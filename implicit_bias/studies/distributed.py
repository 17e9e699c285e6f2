"""The distributed study: data-parallel runs over MPI for every (pattern, n), messages counted.

``implicit-bias experiment=distributed`` (``conf/experiment/distributed.yaml``) launches
``mpiexec -n k python -m implicit_bias.dataparallel …`` once per (pattern, n): k = n worker
processes, n + 1 for the parameter server. Each run is a real MPI job of
:mod:`implicit_bias.dataparallel`: workers hold blocks of rows, synchronize the gradient
every step and count every message they send. The study then compares each limit with the
harness's single-process :func:`implicit_bias.runner.run` of the same configuration and
writes, in Hydra's run directory:

``runs/PATTERN_nN.json``      one record per (pattern, n), written atomically
``single_process.json``       the single-process run it is compared with
``summary.csv``, ``summary.md``  one row per record (the table is also logged)
``distributed_messages.png``  messages, payload bytes and wall time per step against n, the
                              formulas n(n − 1), 2n, 2n(n − 1) (× p or p/n values) as lines

Every record has ``pattern``, ``workers``, ``parameters``, ``messages_per_step`` and
``bytes_per_step`` (counted as sent; null for MPI's own ``allreduce``, whose messages the
harness cannot see), the formula's values, ``status``, ``steps``, ``limit``, its
difference from the single-process limit with the tolerance, the difference step for step,
``limit_digest`` (SHA-256 of the limit's float64 bytes: equal digests, equal bits) and the
per-step wall time.

The study's settings (the ``distributed`` block) are ``patterns`` (a list of
``all_to_all``, ``parameter_server``, ``ring_allreduce``, ``allreduce``), ``workers`` (a
list of ints ≥ 1), ``wait`` (``auto``, ``yield``, ``block``: how a process waits for a
message, see :mod:`implicit_bias.dataparallel`) and ``timeout_s`` (per launch). Every
(pattern, n) is checked before the first launch; bad input is one line
(:class:`~implicit_bias.params.ConfigError`), and so is an MPI that is missing or cannot
start, with what to install.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..build import build
from ..dataparallel import (
    COUNTED, PATTERNS, WAITS, build_run_config, check_setup, compare, formula, processes, single_process,
    single_process_steps,
)
from ..params import Choice, ConfigError, Real, validate
from ..results import atomic_write, jsonable, package_versions, write_json

log = logging.getLogger("implicit_bias")

INSTALL = "install it with: pip install -e \".[mpi]\" (mpi4py and the mpich wheel, which provides mpiexec)"
FIGURE = "distributed_messages.png"
PROBE = "from mpi4py import MPI; print(' '.join(MPI.Get_library_version().splitlines()[0].split()))"
#: one BLAS thread per process: k processes share this machine's cores
THREADS = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


class MPIUnavailable(ConfigError):
    """MPI is not installed or cannot start (one line: what failed and what to install)."""


class _Names:
    """A non-empty list of distinct names from ``options``."""

    def __init__(self, options: Sequence[str]):
        self.options = tuple(options)

    def describe(self) -> str:
        return "a non-empty list of distinct names from " + ", ".join(self.options)

    def check(self, value: Any) -> list[str]:
        if not isinstance(value, (list, tuple)) or not value or len(set(map(str, value))) != len(value):
            raise TypeError
        if any(v not in self.options for v in value):
            raise ValueError
        return list(value)


class _Counts:
    """A non-empty list of distinct ints ≥ 1 (numbers of workers)."""

    def describe(self) -> str:
        return "a non-empty list of distinct ints in [1, inf)"

    def check(self, value: Any) -> list[int]:
        if not isinstance(value, (list, tuple)) or not value:
            raise TypeError
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value) or len(set(value)) != len(value):
            raise ValueError
        return list(value)


SETTINGS = {"patterns": _Names(PATTERNS), "workers": _Counts(), "wait": Choice(WAITS), "timeout_s": Real(0.0)}


def find_mpi() -> tuple[str, str]:
    """(mpiexec, MPI library version), after starting one process; :class:`MPIUnavailable` if
    mpi4py or mpiexec is missing or a one-process job fails."""
    if importlib.util.find_spec("mpi4py") is None:
        raise MPIUnavailable(f"The distributed study needs MPI, and mpi4py is not installed: {INSTALL}.")
    beside = Path(sysconfig.get_path("scripts")) / "mpiexec"  # the wheel's, matching this environment
    mpiexec = str(beside) if beside.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        raise MPIUnavailable(f"The distributed study needs MPI, and no mpiexec was found beside {sys.executable} "
                             f"or on PATH: {INSTALL}.")
    try:
        probe = subprocess.run([mpiexec, "-n", "1", sys.executable, "-c", PROBE], capture_output=True, text=True,
                               timeout=120, env=dict(os.environ, **THREADS))
    except (OSError, subprocess.TimeoutExpired) as err:
        raise MPIUnavailable(f"MPI could not start ({mpiexec} -n 1: {type(err).__name__}); {INSTALL}.") from None
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        raise MPIUnavailable(f"MPI could not start ({mpiexec} -n 1 exited {probe.returncode}: {last}); {INSTALL}.")
    return mpiexec, probe.stdout.strip()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def launch(mpiexec: str, library: str, pattern: str, workers: int, config_file: Path, out_file: Path, wait: str,
           timeout_s: float) -> tuple[dict[str, Any] | None, str]:
    """One ``mpiexec`` job; (its record, "") or (None, why it failed, in one line)."""
    count = processes(pattern, workers)
    command = [mpiexec, "-n", str(count)]
    if library.startswith("Open MPI") and count > _cores():
        command.append("--oversubscribe")  # MPICH oversubscribes by default; Open MPI refuses without it
    command += [sys.executable, "-m", "implicit_bias.dataparallel", "--config", str(config_file), "--pattern", pattern,
                "--out", str(out_file), "--wait", wait, "--no-compare"]
    # its own process group, so that a job past its time is stopped whole
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, **THREADS), start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, f"timeout: mpiexec -n {count} ran past timeout_s={timeout_s:g}"
    if process.returncode != 0 or not out_file.exists():
        last = (stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"mpiexec -n {count} exited {process.returncode}: {last}"
    record = json.loads(out_file.read_text())
    out_file.unlink()
    return record, ""


def digest(limit: Sequence[float] | None) -> str | None:
    """The first 16 hex digits of SHA-256 of the limit's float64 bytes (equal digests, equal bits)."""
    if limit is None:
        return None
    return hashlib.sha256(np.asarray(limit, dtype=np.float64).tobytes()).hexdigest()[:16]


def run(config: Mapping[str, Any], out_dir: Path) -> list[dict[str, Any]]:
    """Run the study: check everything, launch every (pattern, n), record, summarize, draw."""
    block = config.get("distributed")
    if not isinstance(block, Mapping):
        raise ConfigError("The config has no 'distributed' block; run it with experiment=distributed.")
    settings = validate("the distributed study", "", SETTINGS, block)
    run_config = build_run_config(config)
    experiment = build(run_config)
    for workers in settings["workers"]:  # every refusal before the first launch
        for pattern in settings["patterns"]:
            check_setup(experiment, pattern, workers)
    mpiexec, library = find_mpi()
    out_dir = Path(out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    config_file = out_dir / "config.json"
    write_json(config_file, jsonable(run_config))
    reference = single_process(experiment)
    write_json(out_dir / "single_process.json", jsonable({**reference, "limit_digest": digest(reference["limit"])}))
    log.info("single-process run (implicit_bias.runner.run): %s after %d steps", reference["status"], reference["steps"])
    log.info("MPI: %s (%s); patterns %s; n = %s", library, mpiexec, ", ".join(settings["patterns"]),
             ", ".join(map(str, settings["workers"])))
    same_step_cache: dict[int, dict[str, Any]] = {}
    records = []
    for workers in settings["workers"]:
        for pattern in settings["patterns"]:
            name = f"{pattern}_n{workers}"
            started = time.perf_counter()
            raw, failure = launch(mpiexec, library, pattern, workers, config_file, out_dir / "runs" / f".{name}.raw.json",
                                  settings["wait"], settings["timeout_s"])
            record = _record(pattern, workers, experiment, raw, failure, reference, same_step_cache)
            record["launch_wall_time_s"] = time.perf_counter() - started
            record.update(mpiexec=mpiexec, versions={**package_versions(), "mpi": library})
            write_json(out_dir / "runs" / f"{name}.json", jsonable(record))
            records.append(record)
            log.info("  %s", _line(record))
    _mark_identical(records)
    for record in records:  # the cross-pattern comparison needs every run of the same n
        write_json(out_dir / "runs" / f"{record['pattern']}_n{record['workers']}.json", jsonable(record))
    table = markdown(records)
    atomic_write(out_dir / "summary.csv", summary_csv(records).encode())
    atomic_write(out_dir / "summary.md", (table + "\n").encode())
    log.info("\n%s\n\nrecords, summary.csv, summary.md%s in %s", table,
             f", {FIGURE}" if config.get("figure", True) else "", out_dir)
    if config.get("figure", True):
        atomic_write(out_dir / FIGURE, render(records, experiment.problem.A.shape[1], library))
    return records


def _record(pattern: str, workers: int, experiment: Any, raw: dict[str, Any] | None, failure: str,
            reference: Mapping[str, Any], same_step_cache: dict[int, dict[str, Any]]) -> dict[str, Any]:
    parameters = experiment.problem.A.shape[1]
    messages, payload = formula(pattern, workers, parameters)
    record: dict[str, Any] = {
        "pattern": pattern, "workers": workers, "processes": processes(pattern, workers), "parameters": parameters,
        "dataset": {"name": experiment.dataset.name, **experiment.dataset.params},
        "optimizer": {"name": experiment.optimizer.name, **experiment.optimizer.params},
        "schedule": {"name": experiment.schedule.name, **experiment.schedule.params},
        "settings": experiment.settings._asdict(),
        "formula_messages_per_step": messages, "formula_bytes_per_step": payload,
        "counts_note": None if pattern in COUNTED else
        "MPI's own Allreduce: its messages are internal to the MPI library and cannot be counted by the harness",
    }
    if raw is None:
        record.update(status="error", message=failure, steps=None, limit=None, messages_per_step=None,
                      bytes_per_step=None, counts_match_formula=None, limit_digest=None)
        return record
    record.update(raw)
    if raw["steps"] not in same_step_cache:
        same_step_cache[raw["steps"]] = single_process_steps(experiment, raw["steps"])
    record.update(compare(raw["limit"], raw["steps"], reference, same_step_cache[raw["steps"]], experiment))
    record["counts_match_formula"] = (None if pattern not in COUNTED else
                                      raw["messages_per_step"] == messages and raw["bytes_per_step"] == payload)
    record["limit_digest"] = digest(raw["limit"])
    return record


def _mark_identical(records: list[dict[str, Any]]) -> None:
    """``identical_to``: the other patterns with the same n whose limit has the same bits."""
    for record in records:
        record["identical_to"] = sorted(
            other["pattern"] for other in records
            if other is not record and other["workers"] == record["workers"] and record["limit_digest"] is not None
            and other["limit_digest"] == record["limit_digest"])


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def _line(record: Mapping[str, Any]) -> str:
    if record["status"] == "error":
        return f"{record['pattern']}, n = {record['workers']}: error: {record['message']}"
    counts = ("not visible (MPI's own)" if record["messages_per_step"] is None else
              f"{record['messages_per_step']} messages, {record['bytes_per_step']} bytes per step")
    return (f"{record['pattern']}, n = {record['workers']}: {counts}; {record['status']} after {record['steps']} steps, "
            f"{1e6 * record['step_time_s']:.0f} µs/step; difference from single process "
            f"{record['difference_from_single_process']:.2g}")


COLUMNS = ("pattern", "n", "processes", "messages/step", "formula", "bytes/step", "formula", "status", "steps",
           "µs/step", "µs sync", "Δ single process", "Δ same step", "same bits as", "ranks equal")


def markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """The summary table (Markdown): one row per (pattern, n)."""
    body = []
    for r in records:
        ok = r["status"] != "error"
        body.append((
            r["pattern"], str(r["workers"]), str(r["processes"]),
            _fmt(r["messages_per_step"]), _fmt(r["formula_messages_per_step"]),
            _fmt(r["bytes_per_step"]), _fmt(r["formula_bytes_per_step"]),
            r["status"], _fmt(r["steps"]),
            _fmt(1e6 * r["step_time_s"], ".0f") if ok else "—", _fmt(1e6 * r["sync_time_s"], ".0f") if ok else "—",
            _fmt(r.get("difference_from_single_process"), ".1e"), _fmt(r.get("same_step_difference"), ".1e"),
            ", ".join(r.get("identical_to") or []) or "—", _fmt(r.get("ranks_identical")),
        ))
    widths = [max(len(c), *(len(row[i]) for row in body)) for i, c in enumerate(COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    return "\n".join([line(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in body)])


CSV_FIELDS = (
    "pattern", "workers", "processes", "parameters", "messages_per_step", "formula_messages_per_step", "bytes_per_step",
    "formula_bytes_per_step", "counts_match_formula", "status", "steps", "single_process_steps",
    "difference_from_single_process", "relative_difference", "tolerance", "matches_single_process",
    "same_step_difference", "bit_identical_same_step", "limit_digest", "identical_to", "ranks_identical",
    "step_time_s", "sync_time_s", "wait", "message",
)


def summary_csv(records: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = {key: r.get(key) for key in CSV_FIELDS}
        row["single_process_steps"] = (r.get("single_process") or {}).get("steps")
        row["identical_to"] = " ".join(r.get("identical_to") or [])
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


STYLE = {"all_to_all": ("tab:red", "o"), "parameter_server": ("tab:blue", "s"),
         "ring_allreduce": ("tab:green", "^"), "allreduce": ("tab:gray", "D")}


def render(records: Sequence[Mapping[str, Any]], parameters: int, library: str) -> bytes:
    """Messages and payload bytes per step against n (measured: markers; formulas: lines), and
    the wall time per step against n, as PNG bytes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.8), layout="constrained")
    messages_ax, bytes_ax, time_ax = fig.subplots(1, 3)
    done = [r for r in records if r["status"] != "error"]
    grid = np.linspace(1, max([r["workers"] for r in records] + [2]), 200)
    for pattern in PATTERNS:
        color, marker = STYLE[pattern]
        mine = sorted((r for r in done if r["pattern"] == pattern), key=lambda r: r["workers"])
        if not mine:
            continue
        n = np.array([r["workers"] for r in mine])
        if pattern in COUNTED:
            curve = {"all_to_all": grid * (grid - 1), "parameter_server": 2 * grid,
                     "ring_allreduce": 2 * grid * (grid - 1)}[pattern]
            size = {"all_to_all": parameters, "parameter_server": parameters,
                    "ring_allreduce": parameters / grid}[pattern]
            label = {"all_to_all": "n(n−1) × p", "parameter_server": "2n × p",
                     "ring_allreduce": "2n(n−1) × p/n"}[pattern]
            messages_ax.plot(grid, curve, color=color, lw=1, label=f"{pattern}: {label.split(' ×')[0]}")
            bytes_ax.plot(grid, curve * size * 8 / 1e3, color=color, lw=1, label=f"{pattern}: {label} values")
            counted = [r["messages_per_step"] for r in mine]
            sent = [r["bytes_per_step"] for r in mine]
            messages_ax.plot(n, counted, marker, color=color, ms=7, mfc="none", mew=1.5)
            bytes_ax.plot(n, np.array(sent, dtype=float) / 1e3, marker, color=color, ms=7, mfc="none", mew=1.5)
        time_ax.plot(n, [1e3 * r["step_time_s"] for r in mine], marker + "-", color=color, label=pattern)
    messages_ax.set(xlabel="workers n", ylabel="messages per step",
                    title="messages per step: counted (markers), formula (lines)")
    bytes_ax.set(xlabel="workers n", ylabel="payload kB per step (8 bytes per value)",
                 title=f"payload per step, p = {parameters}")
    time_ax.set(xlabel="workers n", ylabel="ms per step", yscale="log",
                title=f"wall time per step, this run ({_cores()} cores)")
    messages_ax.plot([], [], "k", lw=0, label="allreduce (MPI's own): not countable")
    for ax in (messages_ax, bytes_ax, time_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Data-parallel gradient synchronization over MPI ({library})", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
