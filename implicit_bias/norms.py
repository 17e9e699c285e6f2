"""Steepest descent under a norm: the penalized linear improvement of seed problem 1.

    u = argmin_Δ gᵀΔ + (1/α) ‖Δ‖²  =  −(α/2) ‖g‖_* · argmax_{‖v‖ ≤ 1} gᵀv

with ‖·‖_* the dual norm (Bernstein & Newhouse 2024, "Old Optimizer, New Norm"; THEORY.md §3):

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
    """u = argmin_Δ gᵀΔ + (1/α)‖Δ‖² in closed form (see the module table)."""
    if kind == "l2":
        return g * (-alpha / 2.0)
    if kind == "linf":
        return np.sign(g) * (-alpha / 2.0 * float(np.sum(np.abs(g))))
    if kind == "l1":
        u = np.zeros_like(g)
        k = int(np.argmax(np.abs(g)))
        u[k] = -alpha / 2.0 * abs(float(g[k])) * np.sign(g[k])
        return u
    if kind == "lp":
        peak = float(np.max(np.abs(g)))
        if peak == 0.0:
            return np.zeros_like(g)
        q = dual_exponent(p)
        unit = g / peak  # |unit| ≤ 1: neither |g|^{q−1} nor ‖g‖_q^{2−q} can overflow
        unit_q = float(np.sum(np.abs(unit) ** q)) ** (1.0 / q)
        return np.sign(unit) * np.abs(unit) ** (q - 1.0) * (-alpha / 2.0 * peak * unit_q ** (2.0 - q))
    raise ValueError(f"unknown norm {kind!r}; allowed: {', '.join(NORMS)}")


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
