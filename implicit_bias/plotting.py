"""Trajectory figures (matplotlib, imported only when a figure is asked for).

Panel functions take an Axes and data and draw; :func:`plot_run` lays them out and saves.
No pyplot global state: figures are built from :class:`matplotlib.figure.Figure` directly.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .predictions import Prediction
from .problems import Problem
from .runner import Trajectory

MAX_COORDINATES = 10  # coordinates drawn in the d ≠ 3 fallback panel


def _png(fig, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _positive(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(values) & (values > 0)
    return steps[keep], values[keep]


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
    """The path in θ-space, the solution plane aᵀθ = b (one equation), start, limit, prediction."""
    path = _finite_rows(trajectory.theta)
    points = [path] + ([prediction[np.newaxis]] if prediction is not None else [])
    if problem.A.shape[0] == 1:
        draw_plane(ax, problem.A[0], problem.b[0], np.concatenate(points))
    ax.plot(*path.T, "-", color="tab:gray", lw=1, marker=".", ms=3, label="path (log-spaced steps)")
    ax.scatter(*trajectory.theta[0], color="tab:green", s=40, label="start θ0", depthshade=False)
    if np.all(np.isfinite(limit)):
        ax.scatter(*limit, color="tab:red", marker="x", s=60, label="limit", depthshade=False)
    if prediction is not None:
        ax.scatter(*prediction, facecolors="none", edgecolors="black", marker="o", s=110,
                   label="prediction", depthshade=False)
    ax.set_xlabel("θ₁")
    ax.set_ylabel("θ₂")
    ax.set_zlabel("θ₃")
    ax.legend(loc="upper left", fontsize=7)


def draw_coordinates(ax, trajectory: Trajectory, prediction: np.ndarray | None) -> None:
    """Fallback for d ≠ 3: each coordinate θ_i against step, predictions dashed."""
    d = trajectory.theta.shape[1]
    for i in range(min(d, MAX_COORDINATES)):
        line, = ax.plot(trajectory.step, trajectory.theta[:, i], lw=1.2, label=f"θ_{i + 1}")
        if prediction is not None:
            ax.axhline(prediction[i], color=line.get_color(), ls="--", lw=0.8)
    _step_axis(ax, trajectory)
    ax.set_xlabel("step")
    ax.set_ylabel("θ_i  (dashed: prediction)")
    suffix = f" (first {MAX_COORDINATES} of {d})" if d > MAX_COORDINATES else ""
    ax.set_title("coordinates" + suffix, fontsize=9)
    ax.legend(fontsize=7, ncol=2)


def _step_axis(ax, trajectory: Trajectory) -> None:
    """Steps on a log axis that still shows step 0 (linear between 0 and 1)."""
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, max(1, int(trajectory.step[-1])) * 1.05)


def draw_loss(ax, trajectory: Trajectory) -> None:
    ax.plot(*_positive(trajectory.step, trajectory.loss), color="tab:purple", lw=1.2)
    _step_axis(ax, trajectory)
    ax.set_yscale("log")
    ax.set_ylabel("loss f(θ_t)")
    ax.grid(True, which="major", alpha=0.3)


def draw_distance(ax, trajectory: Trajectory, prediction: Prediction, tol: float) -> None:
    _step_axis(ax, trajectory)
    ax.set_xlabel("step t")
    ax.set_ylabel("‖θ_t − prediction‖∞")
    if prediction.point is None:
        ax.text(0.5, 0.5, "no prediction:\n" + textwrap.fill(prediction.reason, 60), ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
        ax.set_yticks([])
        return
    distance = np.max(np.abs(trajectory.theta - prediction.point), axis=1)
    ax.plot(*_positive(trajectory.step, distance), color="tab:red", lw=1.2)
    scale = max(float(np.max(np.abs(prediction.point))), float(np.max(np.abs(trajectory.theta[0])))) or 1.0
    ax.axhline(tol * scale, color="black", ls=":", lw=1, label=f"verdict tolerance {tol:g} × {scale:.3g}")
    ax.set_yscale("log")
    ax.set_ylabel("‖θ_t − prediction‖∞")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)


def render_run(
    problem: Problem,
    trajectory: Trajectory,
    limit: np.ndarray,
    prediction: Prediction,
    title: str,
    tol: float,
) -> bytes:
    """The run figure as PNG bytes: path (3-D, or coordinates if d ≠ 3) left; loss and distance right."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.2), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[1.25, 1])
    if trajectory.theta.shape[1] == 3:
        draw_path_3d(fig.add_subplot(grid[:, 0], projection="3d"), problem, trajectory, limit, prediction.point)
    else:
        draw_coordinates(fig.add_subplot(grid[:, 0]), trajectory, prediction.point)
    loss_ax = fig.add_subplot(grid[0, 1])
    draw_loss(loss_ax, trajectory)
    draw_distance(fig.add_subplot(grid[1, 1], sharex=loss_ax), trajectory, prediction, tol)
    fig.suptitle(title, fontsize=10)
    return _png(fig, dpi=110)


# ---------------------------------------------------------------- sweeps


LEGEND_LIMIT = 12  # above this many runs, colors follow job order and a color bar replaces the legend


def render_sweep(sweep_dir: Path, jobs: Sequence[tuple[str, Mapping[str, Any]]], labels: Sequence[str]) -> bytes:
    """Every run of a sweep in one figure: paths (3-D when d = 3, else the limits' coordinates)
    with predictions marked, and each run's distance to its own prediction against the step.

    Runs that diverged or overflowed are left out of the left panel (their paths would set
    its scale) and named in its title; the right panel shows them all.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    runs = []
    for (job, record), label in zip(jobs, labels):
        path = Path(sweep_dir) / job / "trajectory.npz"
        if path.exists():
            with np.load(path) as npz:
                runs.append((label, record, {k: npz[k] for k in npz.files}))
    many = len(runs) > LEGEND_LIMIT
    colors = (colormaps["viridis"](np.linspace(0, 1, len(runs))) if many else [f"C{i % 10}" for i in range(len(runs))])
    fig = Figure(figsize=(12, 5.4), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[1.2, 1])
    bounded = [i for i, (_, record, _) in enumerate(runs) if record["status"] in ("converged", "max_steps")]
    three_d = bool(runs) and all(data["theta"].shape[1] == 3 for _, _, data in runs)
    left = fig.add_subplot(grid[0, 0], projection="3d" if three_d else None)
    styles = ["-", "--", ":", "-."]  # identical paths (sign descent and epoch-RMS Adam) stay visible
    for i in bounded:
        label, record, data = runs[i]
        color, prediction = colors[i], data.get("prediction")
        if three_d:
            left.plot(*_finite_rows(data["theta"]).T, styles[i % 4], color=color, lw=1.2, label=label)
            left.scatter(*data["limit"], color=color, marker="x", s=50, depthshade=False)
            if prediction is not None:
                left.scatter(*prediction, facecolors="none", edgecolors=color, marker="o", s=120, depthshade=False)
        else:
            index = np.arange(1, data["limit"].shape[0] + 1)
            left.plot(index, data["limit"], "x-", color=color, lw=1, label=label)
            if prediction is not None:
                left.plot(index, prediction, "o", mfc="none", color=color, ms=10)
    datasets = {json.dumps(runs[i][1]["dataset"], sort_keys=True) for i in bounded}
    if three_d and len(datasets) == 1:
        dataset = runs[bounded[0]][1]["dataset"]
        if "a" in dataset and "b" in dataset:
            cloud = np.concatenate([_finite_rows(runs[i][2]["theta"]) for i in bounded]
                                   + [runs[i][2]["prediction"][None] for i in bounded if "prediction" in runs[i][2]])
            draw_plane(left, np.asarray(dataset["a"], dtype=float), float(dataset["b"]), cloud)
    if three_d:
        left.set_xlabel("θ₁")
        left.set_ylabel("θ₂")
        left.set_zlabel("θ₃")
    else:
        left.set_xlabel("coordinate i")
        left.set_ylabel("limit θ∞,i (x) and prediction (o)")
    left_out = len(runs) - len(bounded)
    note = f"; {left_out} diverged or non-finite runs not drawn" if left_out else ""
    left.set_title(f"paths: limit ×, prediction ○{note}", fontsize=9)

    right = fig.add_subplot(grid[0, 1])
    last, start = 1, 0.0
    for i, ((label, record, data), color) in enumerate(zip(runs, colors)):
        if "prediction" not in data:
            continue
        distance = np.max(np.abs(data["theta"] - data["prediction"]), axis=1)
        right.plot(*_positive(data["step"], distance), styles[i % 4], color=color, lw=1.2, marker=".", ms=3,
                   label=f"{label} ({record['status']})")
        last, start = max(last, int(data["step"][-1])), max(start, float(distance[0]))
    right.set_xscale("symlog", linthresh=1)
    right.set_xlim(0, last * 1.05)
    right.set_yscale("log")
    if start > 0:
        right.set_ylim(top=start * 1e3)  # diverging runs leave the top of the panel
    right.set_xlabel("step t")
    right.set_ylabel("‖θ_t − prediction‖∞")
    right.grid(True, which="major", alpha=0.3)
    if many:
        bar = fig.colorbar(ScalarMappable(Normalize(0, len(runs) - 1), cmap="viridis"), ax=right)
        bar.set_label("job (order of summary.csv)")
    else:
        left.legend(fontsize=7, loc="upper left")
        right.legend(fontsize=7)
    fig.suptitle(f"{len(runs)} runs of sweep {Path(sweep_dir).name}", fontsize=10)
    return _png(fig)


def render_sweep_parameter(table: Sequence[Mapping[str, Any]], key: str, others: Sequence[str], not_run: int = 0) -> bytes:
    """Against the one numeric parameter of a sweep, one line per value of the other swept keys:
    the limit's coordinates (predictions dashed), the error and the distances to the reference
    interpolants, and the steps. Runs that did not converge are red crosses with their status."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.6), layout="constrained")
    coords_ax, error_ax, steps_ax = fig.subplots(1, 3, sharex=True)
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in table:
        groups.setdefault(tuple(row[o] for o in others), []).append(row)
    floor = 1e-17
    reference_styles = {"min_l2": (0, (1, 1)), "min_l1": (0, (5, 3)), "min_linf": (0, (8, 2, 1, 2))}
    for i, (group, members) in enumerate(groups.items()):
        members = sorted(members, key=lambda r: float(r[key]))
        color = f"C{i % 10}"
        label = ", ".join(f"{o}={v}" for o, v in zip(others, group)) or "runs"
        x = np.array([float(r[key]) for r in members])
        ok = np.array([r["status"] == "converged" for r in members])
        limits = [json.loads(r["limit"]) for r in members]
        predictions = [json.loads(r["prediction"]) for r in members]
        d = max((len(lim) for lim in limits if lim), default=0)
        markers = "os^vD"
        for j in range(min(d, 5)):
            # one group: a colour per coordinate; several: a colour per group, a marker per coordinate
            shade = f"C{j}" if len(groups) == 1 else color
            # the prediction as a wide pale band under the limits, so both stay visible where they agree
            pred = np.array([p[j] if p else np.nan for p in predictions], dtype=float)
            coords_ax.plot(x, pred, "-", color=shade, lw=7, alpha=0.25, solid_capstyle="round")
            y = np.array([lim[j] if lim and ok_i else np.nan for lim, ok_i in zip(limits, ok)], dtype=float)
            coords_ax.plot(x, y, marker=markers[j], color=shade, ms=4, lw=1.0,
                           label=f"θ_{j + 1} ({label})" if len(groups) > 1 else f"θ_{j + 1}")
        error = np.array([np.nan if r["error"] is None else max(float(r["error"]), floor) for r in members])
        steps = np.array([np.nan if r["steps"] is None else float(r["steps"]) for r in members])
        error_ax.plot(x[ok], error[ok], "o-", color=color, label=f"to prediction ({label})")
        for name, style in reference_styles.items():
            dist = np.array([np.nan if r.get(f"distance_to_{name}") in (None, "") else max(float(r[f"distance_to_{name}"]), floor)
                             for r in members])
            if np.any(np.isfinite(dist[ok])):
                error_ax.plot(x[ok], dist[ok], linestyle=style, color=color, lw=2.0, alpha=0.8,
                              label=f"to {name} ({label})")
        steps_ax.plot(x[ok], steps[ok], "o-", color=color, label=label)
        if np.any(~ok):
            error_ax.plot(x[~ok], error[~ok], "x", color="red", ms=9)
            steps_ax.plot(x[~ok], steps[~ok], "x", color="red", ms=9)
        for r, xi in zip(members, x):
            if r["status"] != "converged":
                steps_ax.annotate(r["status"], (xi, float(r["steps"] or 1)), fontsize=7, color="red",
                                  rotation=60, xytext=(3, 3), textcoords="offset points")
    log_x = all(float(r[key]) > 0 for r in table)
    for ax in (coords_ax, error_ax, steps_ax):
        ax.set_xscale("log" if log_x else "linear")
        ax.set_xlabel(key)
        ax.grid(True, which="major", alpha=0.3)
    for ax in (error_ax, steps_ax):
        ax.set_yscale("log")
    coords_ax.set_ylabel("limit coordinates (converged runs); pale band: prediction")
    error_ax.set_ylabel(f"‖limit − point‖∞ (0 drawn at {floor:g})")
    steps_ax.set_ylabel("steps")
    error_ax.plot([], [], "x", color="red", label="not converged")
    coords_ax.legend(fontsize=7)
    error_ax.legend(fontsize=7)
    steps_ax.legend(fontsize=7)
    skipped = f" ({not_run} jobs that never ran are not drawn; see summary.csv)" if not_run else ""
    fig.suptitle(f"against {key}: limit coordinates, distances to the prediction and to the reference "
                 f"interpolants, steps{skipped}", fontsize=10)
    return _png(fig)


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
    for k, (column, label, color) in enumerate(names):
        values = [np.nan if row.get(column) in (None, "") else max(float(row[column]), floor) for row in table]
        ax.barh(np.arange(len(table)) + (k - 1.5) * height, values, height=height, color=color, label=f"to {label}")
    ax.set_yticks(np.arange(len(table)), [f"{lab} ({row['status']})" for lab, row in zip(labels, table)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"‖limit − point‖∞ (log; 0 drawn at {floor:g}; no bar: no such point)")
    ax.grid(True, axis="x", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("which exact solution did each run find? distance to the prediction and to the reference interpolants",
                 fontsize=10)
    return _png(fig)
