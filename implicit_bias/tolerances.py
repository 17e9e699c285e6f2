"""What float64 and the stopping rule can guarantee: the scales both the runner's convergence
test and the verdict's tolerance are measured on (docs/theory.md §5).

Everything here is scale-free: multiplying A, b and θ0 by constants multiplies each scale
by the matching power of them, so a test or tolerance means the same at any magnitude inside
the supported range (:data:`SUPPORTED_RANGE`).
"""

from __future__ import annotations

import math

import numpy as np

EPS = float(np.finfo(np.float64).eps)

#: the data gradient scale G* must lie inside this range: its square (the loss, the norms'
#: sums of squares) then stays a normal float64, so no test compares underflowed zeros or
#: overflowed infinities; roughly, entries of A and b between 1e-75 and 1e75
SUPPORTED_RANGE = (1e-150, 1e150)


def rounding_factor(d: int) -> float:
    """ρ_d = 8·√(d + 1): the float64 rounding of a d-term dot product, as a multiple of eps.

    The computed residual b − Aθ has a relative rounding error of about √(d+1)·eps for
    random rounding (a worst case of (d+1)·eps that BLAS's blocked sums do not approach);
    the factor 8 keeps a converging run from stalling just above its own rounding noise.
    """
    return 8.0 * math.sqrt(d + 1.0)


def norms(x: np.ndarray) -> np.ndarray:
    """Euclidean norms of the member columns of a (B, m, 1) stack, shape (B,), computed as
    m_j·‖x_j/m_j‖ with m_j = max|x_j| so that neither tiny nor huge entries under- or
    overflow in the squares."""
    peak = np.max(np.abs(x), axis=(1, 2))
    safe = np.where(peak > 0, peak, 1.0)[:, np.newaxis, np.newaxis]
    unit = x / safe
    return np.where(peak > 0, peak * np.sqrt((unit.swapaxes(-1, -2) @ unit)[:, 0, 0]), peak)


def norm(x: np.ndarray) -> float:
    """The scale-safe Euclidean norm of one vector."""
    return float(norms(np.asarray(x, dtype=np.float64).reshape(1, -1, 1))[0])


def data_gradient_scale(A: np.ndarray, b: np.ndarray, theta0: np.ndarray) -> float:
    """G* = (2/n)‖|A|ᵀ(|b| + |Aθ0|)‖: the size of the gradient's terms for the data and for
    the part of θ0 that A sees (a component of θ0 in the null space of A contributes
    nothing to any gradient, and so nothing to this scale)."""
    n = A.shape[0]
    return (2.0 / n) * norm(np.abs(A).T @ (np.abs(b) + np.abs(A @ theta0)))


#: an update smaller than this many eps of ‖θ‖ is below θ's float64 resolution (half an ulp
#: per coordinate, with room for the coordinates' different exponents)
RESOLUTION_FACTOR = 4.0


def out_of_range(scale: float, nontrivial: bool, b_norm: float = 1.0, residual_norm: float = 1.0) -> str:
    """Why data with gradient scale G* = ``scale`` cannot be tested in float64 ("" if they can).

    ``nontrivial``: b ≠ 0 or Aθ0 ≠ 0, so that G* = 0 can only be an underflow (with b = 0 and
    Aθ0 = 0 the start is an exact solution and G* = 0 is the truth). ``b_norm`` = ‖b‖ and
    ``residual_norm`` = ‖b − Aθ0‖ must be in the range too (zero allowed): the loss is their
    square divided by n, and a loss that over- or underflows cannot show progress."""
    low, high = SUPPORTED_RANGE
    if not math.isfinite(scale) or scale > high:
        return (f"the data's gradient scale (2/n)‖|A|ᵀ(|b| + |Aθ0|)‖ = {scale:.3g} is above {high:g}: its square "
                f"overflows float64, so the loss and the convergence test cannot be evaluated; rescale A and b")
    if scale < low and (scale > 0.0 or nontrivial):
        return (f"the data's gradient scale (2/n)‖|A|ᵀ(|b| + |Aθ0|)‖ = {scale:.3g} is below {low:g}: the gradient "
                f"and the convergence test underflow float64 (a converged-looking 0 ≤ 0); rescale A and b")
    for name, value in (("‖b‖", b_norm), ("the initial residual ‖b − Aθ0‖", residual_norm)):
        if not math.isfinite(value) or value > high or 0.0 < value < low:
            return (f"{name} = {value:.3g} is outside [{low:g}, {high:g}]: the loss, its square over n, leaves "
                    f"float64's normal numbers, so the run could not show that it fell; rescale A and b")
    return ""
