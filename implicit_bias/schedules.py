"""Step-size schedules α_t, t = 0, 1, 2, … (t counts optimizer steps).

A schedule is a plain function from an integer array of steps to a float64 array of rates,
so the runner can evaluate a whole block of steps in one call. Every schedule takes ``lr``
as its base rate α0 = α_0, so ``schedule.lr=…`` means the same thing for all of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .params import Integer, Real, Spec

Schedule = Callable[[np.ndarray], np.ndarray]

POSITIVE = Real(0.0)
UNIT_OPEN_CLOSED = Real(0.0, 1.0, closed="right")


def constant(lr: float) -> Schedule:
    """α_t = lr."""
    return lambda t: np.full(np.shape(t), lr)


def inverse_time(lr: float, decay_steps: float) -> Schedule:
    """α_t = lr / (1 + t / decay_steps)  (Σ α_t = ∞, α_t → 0 like 1/t)."""
    return lambda t: lr / (1.0 + np.asarray(t, dtype=np.float64) / decay_steps)


def inverse_sqrt(lr: float, decay_steps: float) -> Schedule:
    """α_t = lr / √(1 + t / decay_steps)  (α_t → 0 like 1/√t)."""
    return lambda t: lr / np.sqrt(1.0 + np.asarray(t, dtype=np.float64) / decay_steps)


def exponential(lr: float, gamma: float) -> Schedule:
    """α_t = lr · γ^t  (geometric; Σ α_t = lr / (1 − γ) is finite)."""
    return lambda t: lr * gamma ** np.asarray(t, dtype=np.float64)


def step(lr: float, factor: float, every: int) -> Schedule:
    """α_t = lr · factor^⌊t / every⌋  (piecewise constant, multiplied by ``factor`` every ``every`` steps)."""
    return lambda t: lr * factor ** np.floor_divide(np.asarray(t), every).astype(np.float64)


def cosine(lr: float, decay_steps: int, final_fraction: float) -> Schedule:
    """α_t = lr · (φ + (1 − φ)(1 + cos(π min(t, T)/T))/2), T = decay_steps, φ = final_fraction.

    Decays from lr to φ·lr over T steps, then stays at φ·lr.
    """

    def values(t: np.ndarray) -> np.ndarray:
        progress = np.minimum(np.asarray(t, dtype=np.float64), decay_steps) / decay_steps
        return lr * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + np.cos(np.pi * progress)))

    return values


SCHEDULES = {
    "constant": Spec(constant, {"lr": POSITIVE}),
    "inverse_time": Spec(inverse_time, {"lr": POSITIVE, "decay_steps": POSITIVE}),
    "inverse_sqrt": Spec(inverse_sqrt, {"lr": POSITIVE, "decay_steps": POSITIVE}),
    "exponential": Spec(exponential, {"lr": POSITIVE, "gamma": UNIT_OPEN_CLOSED}),
    "step": Spec(step, {"lr": POSITIVE, "factor": UNIT_OPEN_CLOSED, "every": Integer(1)}),
    "cosine": Spec(
        cosine,
        {"lr": POSITIVE, "decay_steps": Integer(1), "final_fraction": Real(0.0, 1.0, closed="both")},
    ),
}
