"""Reference interpolants: the minimum-norm exact solutions of Aθ = b, for comparison.

They are not predictions. Whatever the optimizer, the record reports how far its limit lies
from each, so a limit with no closed-form theory can still be placed among the candidates.

======== =================================== ==========================================
name      one equation aᵀθ = b (closed form)  n > 1
======== =================================== ==========================================
min_l2    a b / ‖a‖²                          A⁺ b
min_l1    e_k b / a_k, k = argmax |a_i|       LP (scipy HiGHS): min Σ(u + w), A(u − w) = b
min_linf  sign(a) b / ‖a‖₁                    LP (scipy HiGHS): min t, |θ_i| ≤ t, Aθ = b
======== =================================== ==========================================

The ℓ1 and ℓ∞ minimizers need not be unique (ties in |a_i|, zero entries of a); the closed
forms pick the lowest index and zeros there. scipy is imported only for n > 1.
"""

from __future__ import annotations

import numpy as np

from .problems import Problem


def _rank_one(a: np.ndarray, b: float) -> dict[str, np.ndarray]:
    peak = float(np.max(np.abs(a)))
    unit = a / peak  # overflow-safe: a b/‖a‖² = unit · b/(peak ‖unit‖²)
    k = int(np.argmax(np.abs(a)))
    e = np.zeros_like(a)
    e[k] = b / a[k]
    return {
        "min_l2": unit * (b / (peak * float(unit @ unit))),
        "min_l1": e,
        "min_linf": np.sign(a) * (b / (peak * float(np.sum(np.abs(unit))))),
    }


def _by_lp(A: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    from scipy import sparse
    from scipy.optimize import linprog

    n, d = A.shape
    found = {}
    l1 = linprog(np.ones(2 * d), A_eq=np.hstack([A, -A]), b_eq=b, bounds=[(0, None)] * (2 * d), method="highs")
    if l1.status == 0:
        found["min_l1"] = l1.x[:d] - l1.x[d:]
    eye, ones = sparse.identity(d, format="csr"), sparse.csr_matrix(np.ones((d, 1)))  # sparse: d may be 10^5
    linf = linprog(np.r_[np.zeros(d), 1.0], A_ub=sparse.bmat([[eye, -ones], [-eye, -ones]], format="csr"),
                   b_ub=np.zeros(2 * d),
                   A_eq=np.hstack([A, np.zeros((n, 1))]), b_eq=b, bounds=[(None, None)] * d + [(0, None)], method="highs")
    if linf.status == 0:
        found["min_linf"] = linf.x[:d]
    return found


def interpolants(problem: Problem) -> dict[str, np.ndarray]:
    """The reference points that exist for this problem (an inconsistent system has none)."""
    A, b = problem.A, problem.b
    if A.shape[0] == 1:
        with np.errstate(all="ignore"):  # data at float64's edges: an inf point, reported as such
            return _rank_one(A[0], float(b[0]))
    min_l2 = np.linalg.pinv(A) @ b
    scale = max(float(np.max(np.abs(b))), 1e-300)
    if np.max(np.abs(A @ min_l2 - b)) > 1e-9 * scale:  # no exact solution: nothing to interpolate
        return {}
    return {"min_l2": min_l2, **_by_lp(A, b)}


def distances(limit: np.ndarray, points: dict[str, np.ndarray]) -> dict[str, dict]:
    """``{name: {"point": p, "distance": ‖limit − p‖∞}}`` as recorded in result.json."""
    return {name: {"point": p, "distance": float(np.max(np.abs(limit - p)))} for name, p in points.items()}
