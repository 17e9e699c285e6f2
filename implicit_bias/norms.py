"""Steepest descent under a norm: the penalized linear improvement of seed problem 1.

    u = argmin_Δ gᵀΔ + (1/α) ‖Δ‖²  =  −(α/2) ‖g‖_* · argmax_{‖v‖ ≤ 1} gᵀv

with ‖·‖_* the dual norm (Bernstein & Newhouse 2024, "Old Optimizer, New Norm"; docs/theory.md §3):

====  ==============================================  =====================================
norm  u                                               optimizer
====  ==============================================  =====================================
l2    −(α/2) g                                        gradient descent, η = α/2
linf  −(α/2) ‖g‖₁ sign(g)                             sign descent scaled by ‖g‖₁
l1    −(α/2) ‖g‖∞ sign(g_k) e_k, k = argmax |g_i|     greedy coordinate descent
lp    −(α/2) ‖g‖_q^{2−q} sign(g) ⊙ |g|^{q−1}           q = p/(p − 1), 1 < p < ∞
====  ==============================================  =====================================

Ties in the ℓ1 case (several coordinates with the largest |g_i|) are broken toward the
lowest index. The *unsquared* penalty gᵀΔ + (1/α)‖Δ‖ has no solution worth the name and is
refused (:func:`check_penalty`).
"""

from __future__ import annotations

import numpy as np

NORMS = ("l2", "linf", "l1", "lp")


def dual_exponent(p: float) -> float:
    """q with 1/p + 1/q = 1."""
    return p / (p - 1.0)


def norm(x: np.ndarray, kind: str, p: float | None = None) -> float:
    """‖x‖ for kind in :data:`NORMS` (``p`` for ``lp``), overflow-safe."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if kind == "linf" or peak == 0.0:
        return peak
    if kind == "l1":
        return float(np.sum(np.abs(x)))
    exponent = 2.0 if kind == "l2" else p
    return peak * float(np.sum(np.abs(x / peak) ** exponent)) ** (1.0 / exponent)


def dual_norm(g: np.ndarray, kind: str, p: float | None = None) -> float:
    """‖g‖_* : ℓ2 ↔ ℓ2, ℓ∞ ↔ ℓ1, ℓ1 ↔ ℓ∞, ℓp ↔ ℓq."""
    dual = {"l2": ("l2", None), "linf": ("l1", None), "l1": ("linf", None)}.get(kind)
    return norm(g, *dual) if dual else norm(g, "lp", dual_exponent(p))


def penalized_step(g: np.ndarray, alpha: float, kind: str, p: float | None = None) -> np.ndarray:
    """u = argmin_Δ gᵀΔ + (1/α)‖Δ‖² in closed form (see the module table).

    ``g`` is a vector (d,), a column (d, 1) or a stack of columns (B, d, 1), and ``alpha``
    and ``p`` floats or arrays that broadcast against it (one value per column); the norms
    are taken over the coordinates of each column.
    """
    axis = -2 if g.ndim >= 2 else -1
    if kind == "l2":
        return g * (-alpha / 2.0)
    magnitude = np.abs(g)
    if kind == "linf":
        return np.sign(g) * (-alpha / 2.0 * np.sum(magnitude, axis=axis, keepdims=True))
    if kind == "l1":
        k = np.argmax(magnitude, axis=axis, keepdims=True)  # the first of tied coordinates
        u = np.zeros_like(g)
        np.put_along_axis(u, k, np.take_along_axis(g, k, axis=axis) * (-alpha / 2.0), axis=axis)
        return u
    if kind == "lp":
        peak = np.max(magnitude, axis=axis, keepdims=True)
        moving = peak > 0.0
        q = dual_exponent(p)
        unit = g / np.where(moving, peak, 1.0)  # |unit| ≤ 1: neither |g|^{q−1} nor ‖g‖_q^{2−q} can overflow
        unit_q = _power(np.sum(_power(np.abs(unit), q), axis=axis, keepdims=True), 1.0 / q)
        size = np.where(moving, peak * _power(np.where(moving, unit_q, 1.0), 2.0 - q), 0.0)
        return np.sign(unit) * _power(np.abs(unit), q - 1.0) * (-alpha / 2.0 * size)
    raise ValueError(f"unknown norm {kind!r}; allowed: {', '.join(NORMS)}")


def _power(x: np.ndarray, exponent) -> np.ndarray:
    """x^exponent elementwise, by the same code whether ``exponent`` is a float or an array.

    numpy computes a power whose exponent is one broadcast value of 0.5, 2 or −1 as sqrt,
    square or reciprocal, which need not round as pow does; a batch of runs passes one
    exponent per member, so the exponent is spelled out to x's shape for every caller.
    """
    return np.power(x, np.zeros_like(x) + exponent)


UNSQUARED_IS_ILL_POSED = (
    "the unsquared penalty gᵀΔ + (1/α)‖Δ‖ is ill-posed: along the steepest direction the "
    "objective is t·(1/α − ‖g‖_*) for a step of length t, which is unbounded below when "
    "‖g‖_* > 1/α (for ℓ∞: ‖g‖₁ > 1/α) and is minimized only by Δ = 0 otherwise, so it "
    "never gives a useful step. Use the squared penalty (1/α)‖Δ‖² (squared: true)"
)


def check_penalty(squared: bool) -> None:
    """Refuse the unsquared penalty, with the reason."""
    if not squared:
        raise ValueError(UNSQUARED_IS_ILL_POSED)
