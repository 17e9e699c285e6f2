"""Trajectory figures (matplotlib, imported only when a figure is asked for).

Panel functions take an Axes and data and draw; :func:`render_run` lays them out and returns
PNG bytes. No pyplot global state: figures are built from :class:`matplotlib.figure.Figure`
directly.

Every figure draws whatever a run can produce: a loss or distance that is 0 throughout (a
start on the solution), constant series, a single step, d = 1, very large d (a few
coordinates are drawn, and the panel says which), and non-finite values from runs that blew
up (left out, and the panel says so). A log axis with nothing positive to show becomes a
linear one with a note, never an error.
"""

from __future__ import annotations

import functools
import io
import json
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .predictions import Prediction
from .problems import Problem
from .runner import Trajectory

MAX_COORDINATES = 10  # coordinates drawn against the step in the d ≠ 3 run panel
SWEEP_COORDINATES = 40  # coordinates of each limit drawn in the d ≠ 3 sweep panel
FAR = 1e3  # path points farther than FAR × the size of start, prediction and limit are left out
LOG_CEILING = 1e200  # matplotlib's log axes overflow near 1e290: larger values are left out, with a note


def _png(fig, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _quiet(render: Callable[..., bytes]) -> Callable[..., bytes]:
    """Run a renderer with numpy's floating-point warnings off: the data of a run that blew up
    overflow in matplotlib's scale arithmetic, which prints warnings but draws correctly."""

    @functools.wraps(render)
    def quiet(*args: Any, **kwargs: Any) -> bytes:
        with np.errstate(all="ignore"):
            return render(*args, **kwargs)

    return quiet


def _marker(count: int) -> str:
    """Points are marked on short series, so that a single finite point is still visible."""
    return "." if count <= 30 else ""


def _positive(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points a log axis can show: finite, positive and at most LOG_CEILING."""
    keep = np.isfinite(values) & (values > 0) & (values <= LOG_CEILING)
    return steps[keep], values[keep]


def _below_ceiling(values: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(values, dtype=float) <= LOG_CEILING, values, np.nan)


def _log_scale(ax, axis: str, values: Sequence[np.ndarray], what: str) -> bool:
    """Put ``axis`` ("x" or "y") on a log scale if any of ``values`` (what was drawn) is finite
    and positive; otherwise keep it linear and say why in the panel. Returns whether log."""
    flat = np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in values]) if values else np.zeros(0)
    finite = flat[np.isfinite(flat)]
    if np.any((finite > 0) & (finite <= LOG_CEILING)):
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        if np.any(finite > LOG_CEILING):
            ax.text(0.02, 0.03, f"values above {LOG_CEILING:.0e} not drawn", ha="left", va="bottom",
                    transform=ax.transAxes, fontsize=7, color="dimgray")
        return True
    if finite.size and np.all(finite == 0):
        note = f"{what} is 0 at every point"
    else:
        note = f"no finite positive {what} to draw"
    ax.text(0.5, 0.7, note, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="dimgray",
            bbox={"facecolor": "white", "edgecolor": "lightgray", "boxstyle": "round"})
    if not finite.size:
        (ax.set_ylim if axis == "y" else ax.set_xlim)(0, 1)
    return False


def _size(*points: np.ndarray | None) -> float:
    """max |entry| over the finite entries of the given points (1 if there are none or all are 0)."""
    values = [np.abs(p[np.isfinite(p)]) for p in points if p is not None]
    largest = max((float(v.max()) for v in values if v.size), default=0.0)
    return largest or 1.0


def _near_rows(theta: np.ndarray, size: float) -> np.ndarray:
    """The finite rows of ``theta`` within FAR × ``size`` (a diverged path would set the scale)."""
    finite = theta[np.all(np.isfinite(theta), axis=1)]
    return finite[np.max(np.abs(finite), axis=1, initial=0.0) <= FAR * size]


def draw_plane(ax, a: np.ndarray, b: float, cloud: np.ndarray) -> None:
    """The patch of the plane aᵀθ = b (d = 3) that lies under the points of ``cloud``."""
    foot = a * (b / (a @ a))  # the point of the plane nearest 0
    basis = np.linalg.svd(a[np.newaxis])[2][1:].T  # (3, 2): orthonormal basis of the plane
    coords = (cloud - foot) @ basis
    low, high = coords.min(axis=0), coords.max(axis=0)
    pad = np.maximum(0.15 * (high - low), 0.05 * max(1.0, float(np.abs(coords).max())))
    u, v = np.meshgrid(*(np.linspace(lo, hi, 2) for lo, hi in zip(low - pad, high + pad)))
    plane = foot[:, None, None] + basis[:, 0, None, None] * u + basis[:, 1, None, None] * v
    ax.plot_surface(*plane, alpha=0.15, color="tab:blue", linewidth=0)
    ax.plot([], [], color="tab:blue", alpha=0.4, lw=6, label="solutions aᵀθ = b")


def _finite_rows(theta: np.ndarray) -> np.ndarray:
    return theta[np.all(np.isfinite(theta), axis=1)]


def draw_path_3d(ax, problem: Problem, trajectory: Trajectory, limit: np.ndarray, prediction: np.ndarray | None) -> None:
    """The path in θ-space, the solution plane aᵀθ = b (one equation), start, limit, prediction.

    Points that are not finite, or farther than FAR × the size of the start, prediction and
    limit (a run that overflowed on its way to inf), are left out, and the legend counts them.
    """
    size = _size(trajectory.theta[0], prediction, limit)
    path = _near_rows(trajectory.theta, size)
    left_out = trajectory.theta.shape[0] - path.shape[0]
    points = [path] + ([prediction[np.newaxis]] if prediction is not None else [])
    if problem.A.shape[0] == 1 and np.any(problem.A[0] != 0):
        draw_plane(ax, problem.A[0], problem.b[0], np.concatenate(points))
    note = f"; {left_out} far or non-finite points left out" if left_out else ""
    ax.plot(*path.T, "-", color="tab:gray", lw=1, marker=".", ms=3, label=f"path (log-spaced steps{note})")
    ax.scatter(*trajectory.theta[0], color="tab:green", s=40, label="start θ0", depthshade=False)
    if np.all(np.isfinite(limit)) and np.max(np.abs(limit)) <= FAR * size:
        ax.scatter(*limit, color="tab:red", marker="x", s=60, label="limit", depthshade=False)
    if prediction is not None:
        ax.scatter(*prediction, facecolors="none", edgecolors="black", marker="o", s=110,
                   label="prediction", depthshade=False)
    ax.set_xlabel("θ₁")
    ax.set_ylabel("θ₂")
    ax.set_zlabel("θ₃")
    ax.legend(loc="upper left", fontsize=7)


def shown_coordinates(theta: np.ndarray, limit: int = MAX_COORDINATES) -> tuple[np.ndarray, str]:
    """Which coordinates to draw against the step, and how to say it: all of them for d ≤
    ``limit``, else the ``limit`` that moved most from the start (largest finite |θ_last − θ0|,
    ties by index), in index order."""
    d = theta.shape[1]
    if d <= limit:
        return np.arange(d), ""
    finite = theta[np.all(np.isfinite(theta), axis=1)]
    moved = np.abs(finite[-1] - finite[0]) if finite.shape[0] else np.zeros(d)
    chosen = np.sort(np.argsort(-moved, kind="stable")[:limit])
    return chosen, f"the {limit} of {d} coordinates that moved most"


def draw_coordinates(ax, trajectory: Trajectory, prediction: np.ndarray | None) -> None:
    """Fallback for d ≠ 3: each coordinate θ_i against step, predictions dashed (at most
    MAX_COORDINATES of them; the title says which)."""
    chosen, which = shown_coordinates(trajectory.theta)
    theta = np.where(np.isfinite(trajectory.theta), trajectory.theta, np.nan)
    size = _size(trajectory.theta[0], prediction, trajectory.theta[-1])
    with np.errstate(invalid="ignore"):
        far = np.abs(theta) > FAR * size
    theta[far] = np.nan
    for i in chosen:
        line, = ax.plot(trajectory.step, theta[:, i], lw=1.2, label=f"θ_{i + 1}")
        if prediction is not None:
            ax.axhline(prediction[i], color=line.get_color(), ls="--", lw=0.8)
    _step_axis(ax, trajectory)
    ax.set_xlabel("step")
    ax.set_ylabel("θ_i  (dashed: prediction)")
    blown = np.count_nonzero(~np.all(np.isfinite(trajectory.theta[:, chosen]) & ~far[:, chosen], axis=1))
    notes = [which] + ([f"{blown} far or non-finite points left out"] if blown else [])
    ax.set_title("coordinates" + "".join(f"; {n}" for n in notes if n), fontsize=9)
    ax.legend(fontsize=7, ncol=2)


def _step_axis(ax, trajectory: Trajectory) -> None:
    """Steps on a log axis that still shows step 0 (linear between 0 and 1; a small margin
    left of 0 keeps a point at step 0 off the frame)."""
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(-0.05, max(1, int(trajectory.step[-1])) * 1.05)


def draw_loss(ax, trajectory: Trajectory) -> None:
    steps, loss = _positive(trajectory.step, trajectory.loss)
    _step_axis(ax, trajectory)
    if not _log_scale(ax, "y", [trajectory.loss], "loss"):
        finite = np.isfinite(trajectory.loss)
        steps, loss = trajectory.step[finite], trajectory.loss[finite]
    ax.plot(steps, loss, color="tab:purple", lw=1.2, marker=_marker(len(steps)), ms=4)
    ax.set_ylabel("loss f(θ_t)")
    ax.grid(True, which="major", alpha=0.3)


def draw_distance(ax, trajectory: Trajectory, prediction: Prediction, tolerance: float | None) -> None:
    """‖θ_t − prediction‖∞ against the step, with ``tolerance`` (the max-abs error a match may
    have, the record's ``verdict_tolerance``) dotted when given."""
    _step_axis(ax, trajectory)
    ax.set_xlabel("step t")
    ax.set_ylabel("‖θ_t − prediction‖∞")
    if prediction.point is None:
        ax.text(0.5, 0.5, "no prediction:\n" + textwrap.fill(prediction.reason, 60), ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
        ax.set_yticks([])
        return
    distance = np.max(np.abs(trajectory.theta - prediction.point), axis=1)
    steps, positive = _positive(trajectory.step, distance)
    if _log_scale(ax, "y", [distance], "distance"):
        if tolerance is not None and 0 < tolerance <= LOG_CEILING:
            ax.axhline(tolerance, color="black", ls=":", lw=1, label=f"match tolerance {tolerance:.2g}")
            ax.legend(fontsize=7)
    else:
        finite = np.isfinite(distance)
        steps, positive = trajectory.step[finite], distance[finite]
    ax.plot(steps, positive, color="tab:red", lw=1.2, marker=_marker(len(steps)), ms=4)
    ax.grid(True, which="major", alpha=0.3)


@_quiet
def render_run(
    problem: Problem,
    trajectory: Trajectory,
    limit: np.ndarray,
    prediction: Prediction,
    title: str,
    tolerance: float | None = None,
) -> bytes:
    """The run figure as PNG bytes: path (3-D, or coordinates if d ≠ 3) left; loss and
    distance to the prediction right, with ``tolerance`` (the max-abs error a match may have)
    dotted."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.2), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[1.25, 1])
    if trajectory.theta.shape[1] == 3:
        draw_path_3d(fig.add_subplot(grid[:, 0], projection="3d"), problem, trajectory, limit, prediction.point)
    else:
        draw_coordinates(fig.add_subplot(grid[:, 0]), trajectory, prediction.point)
    loss_ax = fig.add_subplot(grid[0, 1])
    draw_loss(loss_ax, trajectory)
    draw_distance(fig.add_subplot(grid[1, 1], sharex=loss_ax), trajectory, prediction, tolerance)
    fig.suptitle(title, fontsize=10)
    return _png(fig, dpi=110)


# ---------------------------------------------------------------- sweeps


LEGEND_LIMIT = 12  # above this many runs, colors follow job order and a color bar replaces the legend


def _sweep_run(path: Path) -> dict[str, np.ndarray] | None:
    """What the sweep figure needs of one trajectory (None if it does not read back): steps,
    the distance to the prediction, limit, prediction, and the path only when d = 3 (a sweep
    of large-d runs holds d numbers per run, not the whole path)."""
    from .results import DamagedFile, read_trajectory

    try:
        data = read_trajectory(path)
    except DamagedFile:
        return None
    run = {"step": data["step"], "limit": data["limit"]}
    if "prediction" in data and data["prediction"].shape == data["limit"].shape:
        run["prediction"] = data["prediction"]
        with np.errstate(invalid="ignore", over="ignore"):
            run["distance"] = np.max(np.abs(data["theta"] - data["prediction"]), axis=1)
    if data["theta"].shape[1] == 3:
        run["theta"] = data["theta"]
    run["d"] = np.array(data["theta"].shape[1])
    return run


@_quiet
def render_sweep(sweep_dir: Path, jobs: Sequence[tuple[str, Mapping[str, Any]]], labels: Sequence[str]) -> bytes:
    """Every run of a sweep in one figure: paths (3-D when d = 3, else the limits' first
    SWEEP_COORDINATES coordinates) with predictions marked, and each run's distance to its own
    prediction against the step.

    Runs that diverged or overflowed are left out of the left panel (their paths would set
    its scale) and counted in its title; the right panel shows them all. Jobs without a
    readable trajectory are counted in the figure's title.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    runs, unreadable = [], 0
    for (job, record), label in zip(jobs, labels):
        path = Path(sweep_dir) / job / "trajectory.npz"
        if path.exists():
            data = _sweep_run(path)
            if data is None:
                unreadable += 1
            else:
                runs.append((label, record, data))
    many = len(runs) > LEGEND_LIMIT
    colors = (colormaps["viridis"](np.linspace(0, 1, len(runs))) if many else [f"C{i % 10}" for i in range(len(runs))])
    fig = Figure(figsize=(12, 5.4), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[1.2, 1])
    bounded = [i for i, (_, record, data) in enumerate(runs)
               if record["status"] in ("converged", "max_steps", "interrupted") and np.all(np.isfinite(data["limit"]))]
    three_d = bool(runs) and all(int(data["d"]) == 3 for _, _, data in runs)
    left = fig.add_subplot(grid[0, 0], projection="3d" if three_d else None)
    styles = ["-", "--", ":", "-."]  # identical paths (sign descent and epoch-RMS Adam) stay visible
    d_max = max((int(runs[i][2]["d"]) for i in bounded), default=0)
    shown = min(d_max, SWEEP_COORDINATES)
    for i in bounded:
        label, record, data = runs[i]
        color, prediction = colors[i], data.get("prediction")
        if three_d:
            size = _size(data["theta"][0], prediction, data["limit"])
            left.plot(*_near_rows(data["theta"], size).T, styles[i % 4], color=color, lw=1.2, label=label)
            left.scatter(*data["limit"], color=color, marker="x", s=50, depthshade=False)
            if prediction is not None:
                left.scatter(*prediction, facecolors="none", edgecolors=color, marker="o", s=120, depthshade=False)
        else:
            limit = data["limit"][:shown]
            index = np.arange(1, limit.shape[0] + 1)
            marker = "x-" if shown <= 12 else "-"
            left.plot(index, limit, marker, color=color, lw=1, label=label)
            if prediction is not None:
                left.plot(index, prediction[:shown], "o" if shown <= 12 else ".", mfc="none", color=color,
                          ms=10 if shown <= 12 else 5)
    datasets = {json.dumps(runs[i][1]["dataset"], sort_keys=True) for i in bounded}
    if three_d and len(datasets) == 1:
        dataset = runs[bounded[0]][1]["dataset"]
        a = np.asarray(dataset.get("a", []), dtype=float)
        if "b" in dataset and a.shape == (3,) and np.any(a != 0):
            cloud = np.concatenate([_near_rows(runs[i][2]["theta"], _size(runs[i][2]["theta"][0], runs[i][2]["limit"]))
                                    for i in bounded]
                                   + [runs[i][2]["prediction"][None] for i in bounded if "prediction" in runs[i][2]])
            draw_plane(left, a, float(dataset["b"]), cloud)
    if three_d:
        left.set_xlabel("θ₁")
        left.set_ylabel("θ₂")
        left.set_zlabel("θ₃")
    else:
        which = f" (the first {shown} of {d_max})" if d_max > shown else ""
        left.set_xlabel(f"coordinate i{which}")
        left.set_ylabel("limit θ∞,i (x) and prediction (o)")
    left_out = len(runs) - len(bounded)
    note = f"; {left_out} diverged or non-finite runs not drawn" if left_out else ""
    left.set_title(f"paths: limit ×, prediction ○{note}", fontsize=9)

    right = fig.add_subplot(grid[0, 1])
    with_distance = [i for i, (_, _, data) in enumerate(runs) if "distance" in data]
    log_y = _log_scale(right, "y", [runs[i][2]["distance"] for i in with_distance], "distance to the prediction")
    last, start = 1, 0.0
    for i in with_distance:
        label, record, data = runs[i]
        keep = np.isfinite(data["distance"])
        if log_y:
            keep &= (data["distance"] > 0) & (data["distance"] <= LOG_CEILING)
        right.plot(data["step"][keep], data["distance"][keep], styles[i % 4], color=colors[i], lw=1.2, marker=".",
                   ms=3, label=f"{label} ({record['status']})")
        last = max(last, int(data["step"][-1]))
        if np.isfinite(data["distance"][0]):
            start = max(start, float(data["distance"][0]))
    right.set_xscale("symlog", linthresh=1)
    right.set_xlim(-0.05, last * 1.05)
    if log_y and start > 0:
        right.set_ylim(top=start * 1e3)  # diverging runs leave the top of the panel
    drawn = bool(with_distance)
    right.set_xlabel("step t")
    right.set_ylabel("‖θ_t − prediction‖∞")
    right.grid(True, which="major", alpha=0.3)
    if many:
        bar = fig.colorbar(ScalarMappable(Normalize(0, max(len(runs) - 1, 1)), cmap="viridis"), ax=right)
        bar.set_label("job (order of summary.csv)")
    else:
        if bounded:
            left.legend(fontsize=7, loc="upper left")
        if drawn:
            right.legend(fontsize=7)
    missing = f"; {unreadable} jobs with a damaged trajectory.npz not drawn" if unreadable else ""
    fig.suptitle(f"{len(runs)} runs of sweep {Path(sweep_dir).name}{missing}", fontsize=10)
    return _png(fig)


def _number(value: Any) -> float:
    """A table cell as a float: NaN for an empty or missing one."""
    return np.nan if value in (None, "") else float(value)


@_quiet
def render_sweep_parameter(table: Sequence[Mapping[str, Any]], key: str, others: Sequence[str], not_run: int = 0) -> bytes:
    """Against the one numeric parameter of a sweep, one line per value of the other swept keys:
    the limit's coordinates (the first 5; predictions as pale bands), the error and the
    distances to the reference interpolants, and the steps. Runs that did not converge are red
    crosses with their status. Zero distances are drawn at a floor of 1e-17 (a log axis); a
    panel with nothing positive to show is linear and says so."""
    from matplotlib.figure import Figure

    drawable = [row for row in table if abs(float(row[key])) <= LOG_CEILING]
    beyond, table = len(table) - len(drawable), drawable
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    coords_ax, error_ax, steps_ax = fig.subplots(1, 3, sharex=True)
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in table:
        groups.setdefault(tuple(row[o] for o in others), []).append(row)
    floor = 1e-17
    reference_styles = {"min_l2": (0, (1, 1)), "min_l1": (0, (5, 3)), "min_linf": (0, (8, 2, 1, 2))}
    drawn_errors, drawn_steps, d_max = [], [], 0
    for i, (group, members) in enumerate(groups.items()):
        members = sorted(members, key=lambda r: float(r[key]))
        color = f"C{i % 10}"
        label = ", ".join(f"{o}={v}" for o, v in zip(others, group)) or "runs"
        x = np.array([float(r[key]) for r in members])
        ok = np.array([r["status"] == "converged" for r in members])
        limits = [json.loads(r["limit"]) or [] for r in members]
        predictions = [json.loads(r["prediction"]) or [] for r in members]
        d = max((len(lim) for lim in limits), default=0)
        d_max = max(d_max, d)
        markers = "os^vD"
        for j in range(min(d, 5)):
            # one group: a colour per coordinate; several: a colour per group, a marker per coordinate
            shade = f"C{j}" if len(groups) == 1 else color
            # the prediction as a wide pale band under the limits, so both stay visible where they agree
            pred = np.array([p[j] if len(p) > j else np.nan for p in predictions], dtype=float)
            coords_ax.plot(x, pred, "-", color=shade, lw=7, alpha=0.25, solid_capstyle="round")
            y = np.array([lim[j] if len(lim) > j and ok_i else np.nan for lim, ok_i in zip(limits, ok)], dtype=float)
            coords_ax.plot(x, y, marker=markers[j], color=shade, ms=4, lw=1.0,
                           label=f"θ_{j + 1} ({label})" if len(groups) > 1 else f"θ_{j + 1}")
        error = _below_ceiling([max(_number(r["error"]), floor) for r in members])
        steps = np.array([_number(r["steps"]) for r in members])
        error_ax.plot(x[ok], error[ok], "o-", color=color, label=f"to prediction ({label})")
        drawn_errors.append(error)
        for name, style in reference_styles.items():
            dist = _below_ceiling([max(_number(r.get(f"distance_to_{name}")), floor) for r in members])
            if np.any(np.isfinite(dist[ok])):
                error_ax.plot(x[ok], dist[ok], linestyle=style, color=color, lw=2.0, alpha=0.8,
                              label=f"to {name} ({label})")
                drawn_errors.append(dist[ok])
        positive = steps > 0
        steps_ax.plot(x[ok & positive], steps[ok & positive], "o-", color=color, label=label)
        drawn_steps.append(steps)
        if np.any(~ok):
            error_ax.plot(x[~ok], error[~ok], "x", color="red", ms=9)
            steps_ax.plot(x[~ok & positive], steps[~ok & positive], "x", color="red", ms=9)
        for r, xi, si in zip(members, x, steps):
            if r["status"] != "converged":
                steps_ax.annotate(r["status"], (xi, si if si > 0 else 1.0), fontsize=7, color="red",
                                  rotation=60, xytext=(3, 3), textcoords="offset points")
    log_x = bool(table) and all(float(r[key]) > 0 for r in table)
    for ax in (coords_ax, error_ax, steps_ax):
        ax.set_xscale("log" if log_x else "linear")
        ax.set_xlabel(key)
        ax.grid(True, which="major", alpha=0.3)
    _log_scale(error_ax, "y", drawn_errors, "distance")
    _log_scale(steps_ax, "y", drawn_steps, "step count")
    which = f", the first 5 of {d_max}" if d_max > 5 else ""
    coords_ax.set_ylabel(f"limit coordinates (converged runs{which}); pale band: prediction")
    error_ax.set_ylabel(f"‖limit − point‖∞ (0 drawn at {floor:g})")
    steps_ax.set_ylabel("steps (0 not drawn)")
    error_ax.plot([], [], "x", color="red", label="not converged")
    for ax in (coords_ax, error_ax, steps_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    skipped = [f"{not_run} jobs that never ran"] if not_run else []
    skipped += [f"{beyond} jobs with |{key}| > {LOG_CEILING:.0e}"] if beyond else []
    skipped = f" ({' and '.join(skipped)} are not drawn; see summary.csv)" if skipped else ""
    fig.suptitle(f"against {key}: limit coordinates, distances to the prediction and to the reference "
                 f"interpolants, steps{skipped}", fontsize=10)
    return _png(fig)


@_quiet
def render_sweep_references(table: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> bytes:
    """Each run's distance (‖limit − point‖∞, log scale) to its prediction and to the reference
    interpolants min-ℓ2, min-ℓ1, min-ℓ∞: which candidate solution did each optimizer pick?"""
    from matplotlib.figure import Figure

    names = [("error", "prediction", "black"), ("distance_to_min_l2", "min-ℓ2", "C0"),
             ("distance_to_min_l1", "min-ℓ1", "C2"), ("distance_to_min_linf", "min-ℓ∞", "C3")]
    floor = 1e-17
    fig = Figure(figsize=(10, 0.42 * len(table) + 1.6), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(names)
    drawn = []
    for k, (column, label, color) in enumerate(names):
        values = _below_ceiling([max(_number(row.get(column)), floor) for row in table])
        ax.barh(np.arange(len(table)) + (k - 1.5) * height, values, height=height, color=color, label=f"to {label}")
        drawn.append(values)
    ax.set_yticks(np.arange(len(table)), [f"{lab} ({row['status']})" for lab, row in zip(labels, table)], fontsize=8)
    ax.invert_yaxis()
    if _log_scale(ax, "x", drawn, "distance"):
        finite = np.concatenate(drawn)
        finite = finite[np.isfinite(finite)]
        ax.set_xlim(floor / 10, finite.max() * 10)
    ax.set_xlabel(f"‖limit − point‖∞ (log; 0 drawn at {floor:g}; no bar: no such point)")
    ax.grid(True, axis="x", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("which exact solution did each run find? distance to the prediction and to the reference interpolants",
                 fontsize=10)
    return _png(fig)
