"""Readable summaries: one run on the console, and the table after a multirun.

:class:`SummaryCallback` is a Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``):
when a multirun ends it reads every job's ``result.json`` from the sweep directory, prints
one table and writes it to ``summary.md`` there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .results import RESULT_FILE, atomic_write, read_json

SHOWN_COORDINATES = 6
COLUMNS = ("job", "optimizer", "schedule", "limit", "prediction", "error", "verdict", "steps", "status")


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
    tol = record["settings"]["verdict_tol"]
    relative = "" if record["relative_error"] is None else f", relative {record['relative_error']:.1e}"
    lines.append(f"  error {format_error(record['error'])} (max-abs{relative}; tolerance {tol:g} relative): {record['verdict']}")
    if out_dir is not None:
        lines.append(f"  records in {out_dir}")
    return "\n".join(lines)


def collect(sweep_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(job directory name, record) for every job of a sweep, in job order."""
    found = []
    for path in Path(sweep_dir).glob(f"*/{RESULT_FILE}"):
        job = path.parent.name
        found.append((int(job) if job.isdigit() else job, job, read_json(path)))
    found.sort(key=lambda item: (isinstance(item[0], str), item[0]))
    return [(job, record) for _, job, record in found]


def table(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """A Markdown table, one row per run."""
    body = []
    for job, record in rows:
        body.append((
            job,
            record["optimizer"]["name"],
            describe(record["schedule"]),
            format_vector(record["limit"]),
            format_vector(record["prediction"]),
            format_error(record["error"]),
            record["verdict"],
            str(record["steps"]),
            record["status"],
        ))
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"
    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(COLUMNS), rule, *(line(r) for r in body)])


def summarize(sweep_dir: Path) -> str:
    """Build the sweep's table, write ``summary.md`` beside the jobs, return the table."""
    text = table(collect(sweep_dir))
    atomic_write(Path(sweep_dir) / "summary.md", (text + "\n").encode())
    return text


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra-core is a dependency
    Callback = object


class SummaryCallback(Callback):
    """Print and save the sweep's table when a multirun ends."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(f"\nSweep summary ({sweep_dir / 'summary.md'}):\n{summarize(sweep_dir)}")
