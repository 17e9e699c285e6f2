"""Datasets: least-squares problems f(θ) = (1/n) Σ_j (b_j − a_jᵀθ)² with a starting point θ0.

Every dataset factory returns a :class:`Problem`; the registry :data:`DATASETS` maps the
config name (``conf/dataset/<name>.yaml``) to the factory and its parameter constraints.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .params import ConfigError, FiniteReal, Spec, Vector


class Problem(NamedTuple):
    """Squared loss on a linear system, all arrays float64.

    A : (n, d) features, one row a_jᵀ per equation
    b : (n,) targets
    theta0 : (d,) starting point
    """

    A: np.ndarray
    b: np.ndarray
    theta0: np.ndarray


def residual(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """r = b − Aθ."""
    return problem.b - problem.A @ theta


def loss(problem: Problem, theta: np.ndarray) -> float:
    """f(θ) = (1/n) ‖b − Aθ‖²."""
    r = residual(problem, theta)
    return float(r @ r) / problem.A.shape[0]


def gradient(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """∇f(θ) = −(2/n) Aᵀ(b − Aθ)."""
    return problem.A.T @ residual(problem, theta) * (-2.0 / problem.A.shape[0])


def feature_scale(A: np.ndarray) -> np.ndarray:
    """s_i = 1 / rms(column i) = 1/√(mean_j A_ji²): the scale giving every feature unit second moment.

    A column that is identically zero carries no information and never moves under any
    gradient method; it keeps scale 1 rather than an infinite one.
    """
    peak = np.max(np.abs(A), axis=0)
    unit = np.divide(A, peak, out=np.zeros_like(A), where=peak > 0)  # squares cannot overflow
    rms = peak * np.sqrt(np.mean(unit * unit, axis=0))
    scale = np.ones_like(rms)
    np.divide(1.0, rms, out=scale, where=rms > 0)
    return scale


def rescale_features(problem: Problem) -> tuple[Problem, np.ndarray]:
    """Reparametrize θ = s ⊙ θ' so that the features A' = A diag(s) have unit second moment.

    Returns the problem in θ' coordinates and ``s``; map a point back with ``s * theta_prime``.
    """
    s = feature_scale(problem.A)
    return Problem(problem.A * s, problem.b, problem.theta0 / s), s


def single_equation(a: np.ndarray, b: float, theta0: np.ndarray | None) -> Problem:
    """One equation aᵀθ = b (rank-one data, n = 1); ``theta0`` null means θ0 = 0."""
    d = a.shape[0]
    if theta0 is None:
        theta0 = np.zeros(d)
    elif theta0.shape[0] != d:
        raise ConfigError(
            f"The 'theta0' parameter of dataset 'single_equation' must have length {d} "
            f"(the length of 'a'). Got length {theta0.shape[0]} instead."
        )
    if not np.any(a):
        raise ConfigError(
            "The 'a' parameter of dataset 'single_equation' must have a non-zero entry "
            "(a = 0 makes aᵀθ = b unsolvable or trivial). Got all zeros instead."
        )
    return Problem(a[np.newaxis, :].copy(), np.array([b]), theta0.copy())


DATASETS = {
    "single_equation": Spec(
        single_equation,
        {"a": Vector(), "b": FiniteReal(), "theta0": Vector(optional=True)},
    ),
}
