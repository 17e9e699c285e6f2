"""Trajectory figures (matplotlib, imported only when a figure is asked for).

Panel functions take an Axes and data and draw; :func:`plot_run` lays them out and saves.
No pyplot global state: figures are built from :class:`matplotlib.figure.Figure` directly.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np

from .predictions import Prediction
from .problems import Problem
from .runner import Trajectory

MAX_COORDINATES = 10  # coordinates drawn in the d ≠ 3 fallback panel


def _positive(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(values) & (values > 0)
    return steps[keep], values[keep]


def draw_path_3d(ax, problem: Problem, trajectory: Trajectory, limit: np.ndarray, prediction: np.ndarray | None) -> None:
    """The path in θ-space, the solution plane aᵀθ = b (one equation), start, limit, prediction."""
    path = trajectory.theta[np.all(np.isfinite(trajectory.theta), axis=1)]
    points = [path] + ([prediction[np.newaxis]] if prediction is not None else [])
    if problem.A.shape[0] == 1:
        a, b = problem.A[0], problem.b[0]
        foot = a * (b / (a @ a))  # the point of the plane nearest 0
        basis = np.linalg.svd(a[np.newaxis])[2][1:].T  # (3, 2): orthonormal basis of the plane
        cloud = np.concatenate(points)
        coords = (cloud - foot) @ basis
        low, high = coords.min(axis=0), coords.max(axis=0)
        pad = np.maximum(0.15 * (high - low), 0.05 * max(1.0, float(np.abs(coords).max())))
        u, v = np.meshgrid(*(np.linspace(lo, hi, 2) for lo, hi in zip(low - pad, high + pad)))
        plane = foot[:, None, None] + basis[:, 0, None, None] * u + basis[:, 1, None, None] * v
        ax.plot_surface(*plane, alpha=0.15, color="tab:blue", linewidth=0)
        ax.plot([], [], color="tab:blue", alpha=0.4, lw=6, label="solutions aᵀθ = b")
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
