"""The theory registry: which closed form predicts which optimizer's limit, and when.

Which theory predicts which optimizer is a scientific claim, so it lives in one table,
:data:`THEORIES`, each entry with its formula, its source and its preconditions. A
prediction is made only when every precondition holds; otherwise the record says
"no prediction" and names the precondition that failed.

Rank-one data (docs/theory.md §2.4): with one equation aᵀθ = b every update of these
optimizers is a multiple of one fixed direction v, so the iterates stay on the line
θ0 + span(v) and, if they converge to a solution, the limit is

    θ∞ = θ0 + v (b − aᵀθ0) / (aᵀv).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .norms import penalized_step
from .problems import Problem, Spectrum, feature_scale, spectrum
from .tolerances import EPS, data_gradient_scale, norm, rounding_factor

RANK_ONE_FORMULA = "θ∞ = θ0 + v (b − aᵀθ0) / (aᵀv)"

Check = Callable[[Problem, Mapping[str, Any]], str | None]  # returns why it fails, or None


class Theory(NamedTuple):
    direction: Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]  # v from (a, optimizer params)
    direction_text: str | Callable[[Mapping[str, Any]], str]
    source: str
    checks: tuple[Check, ...] = ()  # a failure means no prediction
    approximations: tuple[Check, ...] = ()  # a failure means the prediction is only approximate


class Prediction(NamedTuple):
    point: np.ndarray | None
    formula: str
    source: str
    reason: str  # why there is no prediction ("" when there is one)
    exact: bool = True
    approximation: str = ""  # why the prediction is only approximate ("" when exact)
    #: (q, v): the theory keeps every iterate on the line q + span(v). Set for sign-type
    #: methods, whose steps follow signs that float64 rounding can flip: a limit off this line
    #: was decided by rounding, not by the theory (the verdict is then inconclusive)
    line: tuple[np.ndarray, np.ndarray] | None = None


def _eps_is_zero(problem: Problem, params: Mapping[str, Any]) -> str | None:
    if params.get("eps", 0.0) != 0.0:
        return (
            f"eps = {params['eps']:g} > 0: once the gradients shrink below eps the method behaves "
            "like preconditioned GD (step lr/eps with eps outside the square root, lr/√eps inside; "
            "AdaGrad's accumulator never decays), so the limit drifts off the sign line by an amount "
            "that grows with eps; the sign-line point is reported as an approximation and the "
            "record's error is the measured drift (docs/theory.md §4)"
        )
    return None


def tie_tolerance(n: int) -> float:
    """Relative gap below which two gradient entries count as tied: 8·(n + 1)·eps. The
    computed gradient (−2/n)·Aᵀr rounds each entry in its own way (a product and an n-term
    sum), so entries of A this close can swap order, or become equal, in float64."""
    return 8.0 * (n + 1) * EPS


def _unique_largest_entry(problem: Problem, params: Mapping[str, Any]) -> str | None:
    if params.get("norm") != "l1" or problem.A.shape[0] != 1:
        return None
    magnitudes = np.abs(problem.A[0])
    peak = float(magnitudes.max())
    largest = np.flatnonzero(magnitudes >= peak * (1.0 - tie_tolerance(1)))
    if largest.size > 1:
        exact = bool(np.all(magnitudes[largest] == peak))
        how = "tie" if exact else f"tie within rounding (relative gap ≤ {tie_tolerance(1):.1e}, a few ulps)"
        return (
            f"coordinates {largest.tolist()} {how} for the largest |a_i|: the steepest ℓ1 direction is "
            "not unique, and the limit depends on how ties are broken"
        )
    return None


def _steepest_direction(a: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """The direction the steepest step takes for every gradient −c·a, c > 0: the step is odd
    and positively homogeneous in g, so it is the norm's own step for −a (ℓ1 ties included)."""
    return penalized_step(-a, 2.0, params["norm"], params.get("p"))


STEEPEST_TEXT = {
    "l2": "v = a", "linf": "v = sign(a)", "l1": "v = e_k, k = argmax |a_i|",
    "lp": "v = sign(a) ⊙ |a|^(q−1), q = p/(p−1) (the min-ℓp interpolant, by Hölder's equality case)",
}
GD_SOURCE = "docs/theory.md §1, §2.4: GD moves only along a (Gunasekar, Lee, Soudry, Srebro, ICML 2018)"
ADAPTIVE_SOURCE = (
    "docs/theory.md §2.4: with one sample every gradient is a multiple of a, so m_i/√v_i = sign(a_i)·c_t "
    "and the step moves along sign(a) (Wilson, Roelofs, Stern, Srebro, Recht, NeurIPS 2017)"
)


def _preconditioned(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """s² ⊙ a, evaluated as s ⊙ (s ⊙ a) so that s² cannot overflow."""
    return s * (s * a)


SIGN_SOURCE = (
    "docs/theory.md §1, §2.4: with one sample the epoch mean of g_i² is g_i², so M_t∇f = sign(∇f) and "
    "every step moves along sign(a) (Wilson, Roelofs, Stern, Srebro, Recht, NeurIPS 2017: "
    "the condition A sign(Aᵀb) = c b holds with c = ‖a‖₁/|b| for b ≠ 0)"
)

THEORIES: dict[str, Theory] = {
    "sgd": Theory(direction=lambda a, params: a, direction_text="v = a", source=GD_SOURCE),
    "momentum": Theory(
        direction=lambda a, params: a, direction_text="v = a",
        source=GD_SOURCE + "; every step is a combination of past gradients, all multiples of a",
    ),
    "nesterov": Theory(
        direction=lambda a, params: a, direction_text="v = a",
        source=GD_SOURCE + "; every step is a combination of past gradients, all multiples of a",
    ),
    "steepest": Theory(
        direction=_steepest_direction,
        direction_text=lambda params: f"norm {params['norm']}: {STEEPEST_TEXT[params['norm']]}",
        source=(
            "docs/theory.md §2.4, §3: the steepest-descent step for a norm is a fixed direction times a scalar "
            "when every gradient is a multiple of a (Gunasekar et al. 2018; Bernstein & Newhouse 2024)"
        ),
        checks=(_unique_largest_entry,),
    ),
    "preconditioned": Theory(
        direction=lambda a, params: np.asarray(params["diagonal"]) * a,
        direction_text="v = P a",
        source="docs/theory.md §2.2, §2.4: θ ← θ − α P ∇f moves along P a when every gradient is a multiple of a",
    ),
    "adam": Theory(lambda a, params: np.sign(a), "v = sign(a)", ADAPTIVE_SOURCE, approximations=(_eps_is_zero,)),
    "adagrad": Theory(lambda a, params: np.sign(a), "v = sign(a)", ADAPTIVE_SOURCE, approximations=(_eps_is_zero,)),
    "rmsprop": Theory(lambda a, params: np.sign(a), "v = sign(a)", ADAPTIVE_SOURCE, approximations=(_eps_is_zero,)),
    "sign_sgd": Theory(
        direction=lambda a, params: np.sign(a),
        direction_text="v = sign(a)",
        source="docs/theory.md §1, §2.4: every signSGD step is ±α_t sign(a)",
    ),
    "epoch_rms_adam": Theory(
        direction=lambda a, params: np.sign(a),
        direction_text="v = sign(a)",
        source=SIGN_SOURCE,
        approximations=(_eps_is_zero,),
    ),
    "rescaled_sgd": Theory(
        direction=lambda a, params: _preconditioned(feature_scale(a[np.newaxis, :]), a),
        direction_text="v = s² ⊙ a, s_i = 1/rms(column i)",
        source=(
            "docs/theory.md §1, §2.2: SGD on features rescaled by s moves θ along s² ⊙ a "
            "(= GD preconditioned by P = diag(s)²)"
        ),
    ),
}


def predict(optimizer: str, params: Mapping[str, Any], problem: Problem, batch_size: int | None = None) -> Prediction:
    """The predicted limit of ``optimizer`` (with validated ``params``) on ``problem``.

    One equation: the rank-one table :data:`THEORIES`. Several: :func:`predict_general`.
    ``batch_size`` (None: full batch) matters only for several equations.
    """
    if problem.A.shape[0] > 1:
        return predict_general(optimizer, params, problem, batch_size)
    theory = THEORIES.get(optimizer)
    if theory is None:
        return Prediction(None, "", "", f"no theory is registered for optimizer {optimizer!r}")
    text = theory.direction_text(params) if callable(theory.direction_text) else theory.direction_text
    formula = f"{RANK_ONE_FORMULA}, {text}"
    for check in theory.checks:
        reason = check(problem, params)
        if reason is not None:
            return Prediction(None, formula, theory.source, reason)
    approximation = "; ".join(r for r in (check(problem, params) for check in theory.approximations) if r)
    a, b, theta0 = problem.A[0], problem.b[0], problem.theta0
    v = theory.direction(a, params)
    # Evaluated with a and v normalized to unit ∞-norm, so that aᵀv cannot overflow or
    # underflow for data of any magnitude: v/(aᵀv) = v̂ / (‖a‖∞ âᵀv̂).
    with np.errstate(all="ignore"):  # data at float64's edges may give an inf point; the run reports out_of_range
        return _rank_one_point(optimizer, params, theory, formula, approximation, a, b, theta0, v)


def _rank_one_point(optimizer, params, theory, formula, approximation, a, b, theta0, v) -> Prediction:
    a_max, v_max = float(np.max(np.abs(a))), float(np.max(np.abs(v)))
    a_hat, v_hat = a / a_max, v / v_max
    along = float(a_hat @ v_hat)
    if abs(along) <= 1e-12 * float(np.linalg.norm(a_hat) * np.linalg.norm(v_hat)):
        return Prediction(None, formula, theory.source, "aᵀv = 0: the update direction never changes aᵀθ")
    point = theta0 + v_hat * ((b - a @ theta0) / (a_max * along))
    line = (theta0, v_hat) if _sign_is_discontinuous(optimizer, params) else None
    return Prediction(point, formula, theory.source, "", exact=not approximation, approximation=approximation,
                      line=line)


# ---------------------------------------------------------------- several equations (docs/theory.md §2)

GD_FAMILY = ("sgd", "momentum", "nesterov")
WILSON_FAMILY = ("adam", "adagrad", "rmsprop", "sign_sgd")
GENERAL_GD = "θ∞ = θ0 + A⁺(b − Aθ0)"
GENERAL_PRECONDITIONED = "θ∞ = θ0 + P^{1/2}(A P^{1/2})⁺(b − Aθ0)"
WILSON = "θ∞ = sign(Aᵀb)/c when A sign(Aᵀb) = c·b and θ0 ∈ span(sign(Aᵀb))"
GD_GENERAL_SOURCE = ("docs/theory.md §2.1: GD, SGD, heavy ball and Nesterov stay in θ0 + range(Aᵀ) (Gunasekar, Lee, "
                     "Soudry, Srebro, ICML 2018; Azizan & Hassibi, ICLR 2019 for per-sample SGD)")
WILSON_SOURCE = ("docs/theory.md §2.5: Wilson, Roelofs, Stern, Srebro, Recht (NeurIPS 2017): if A sign(Aᵀb) = c·b, every "
                 "gradient keeps the sign pattern of Aᵀb and the iterates stay on the line through sign(Aᵀb)")


def _consistent(A: np.ndarray, b: np.ndarray, point: np.ndarray) -> bool:
    """Does ``point`` solve Aθ = b, relative to the size of the terms (|A||θ| + |b|)?"""
    terms = np.abs(A) @ np.abs(point) + np.abs(b)
    return bool(np.all(np.abs(A @ point - b) <= 1e-9 * np.max(terms)))


def _one_equation(problem: Problem) -> Problem:
    """A rank-one system as the one equation aᵀθ = β with the same gradients' direction and the
    same least-squares stationary set: a = the largest row, A_j = k_j a, β = Σ k_j b_j / Σ k_j²."""
    A, b = problem.A, problem.b
    a = A[int(np.argmax(np.sum(A * A, axis=1)))]
    k = A @ a / (a @ a)
    return Problem(a[np.newaxis], np.array([float(k @ b) / float(k @ k)]), problem.theta0)


def _fixed_preconditioner(optimizer: str, params: Mapping[str, Any], A: np.ndarray) -> tuple | None:
    """(diagonal of P, formula, source) for the methods that move θ only within θ0 + P range(Aᵀ)."""
    if optimizer in GD_FAMILY or (optimizer == "steepest" and params.get("norm") == "l2"):
        return np.ones(A.shape[1]), GENERAL_GD, GD_GENERAL_SOURCE
    source = ("docs/theory.md §2.2: a fixed preconditioner P keeps θ in θ0 + P range(Aᵀ); rescaled SGD is P = S², "
              "S = diag(1/rms of each feature)")
    if optimizer == "rescaled_sgd":
        return feature_scale(A) ** 2, GENERAL_PRECONDITIONED, source
    if optimizer == "preconditioned":
        return np.asarray(params["diagonal"]), GENERAL_PRECONDITIONED, source
    return None


SIGN_LIKE = ("sign_sgd", "adam", "adagrad", "rmsprop", "epoch_rms_adam")
FULL_RANK_SOURCE = ("docs/theory.md §2.3: with full column rank f has exactly one stationary point, the least-squares "
                    "solution, and the stopping rule accepts only points where the full gradient vanishes (relative "
                    "to its terms), whatever the optimizer, schedule or minibatching")
RANK_ONE_SOURCE = ("docs/theory.md §2.4: rows a_j = k_j a, so every full, minibatch and per-sample gradient is a "
                   "multiple of a")


def _exactly_proportional_signs(A: np.ndarray) -> bool:
    """Do all nonzero rows have the sign pattern ±sign(a) of the largest row, zeros included?
    Sign-type steps see only signs, so rows proportional merely within rounding would move
    coordinates the rank-one theory keeps fixed."""
    a = A[int(np.argmax(np.sum(A * A, axis=1)))]
    pattern = np.sign(a)
    rows = np.sign(A[np.any(A != 0, axis=1)])
    return bool(np.all(np.all(rows == pattern, axis=1) | np.all(rows == -pattern, axis=1)))


def _rows_share_one_largest_entry(A: np.ndarray) -> str:
    """Why per-row steepest ℓ1 steps may pick different coordinates ("" if they cannot): every
    nonzero row must have the same largest |entry|, clear of every other by the tie tolerance
    for n rows (a minibatch step follows its own rows' argmax)."""
    tol = tie_tolerance(A.shape[0])
    chosen = set()
    for row in np.abs(A[np.any(A != 0, axis=1)]):
        peak = float(row.max())
        top = np.flatnonzero(row >= peak * (1.0 - tol))
        if top.size > 1:
            return (f"a row's largest entries {top.tolist()} tie within rounding (relative gap ≤ {tol:.1e}): "
                    "steepest ℓ1 steps on it can pick either coordinate")
        chosen.add(int(top[0]))
    if len(chosen) > 1:
        return (f"the rows' largest entries are in different coordinates {sorted(chosen)}: A has rank one only "
                "within rounding, and steepest ℓ1 steps follow each row's own argmax")
    return ""


def _sign_is_discontinuous(optimizer: str, params: Mapping[str, Any]) -> bool:
    return optimizer in SIGN_LIKE or (optimizer == "steepest" and params.get("norm") in ("l1", "linf"))


def _wilson(problem: Problem, params: Mapping[str, Any], minibatch: bool) -> Prediction:
    """Wilson et al.'s line: if A u = c·b with u = sign(Aᵀb) and c > 0, every full-batch
    sign-type or adaptive step from a θ0 on span(u) stays on that line, and the only
    stationary point on it is u/c (docs/theory.md §2.5)."""
    A, b, theta0 = problem.A, problem.b, problem.theta0
    n = A.shape[0]
    atb = A.T @ b
    direction = np.sign(atb)
    along = A @ direction
    scale = float(b @ b)
    c = float(along @ b) / scale if scale > 0 else 0.0
    terms = np.abs(A).T @ np.abs(b)
    rounding_zero = (np.abs(atb) <= tie_tolerance(n) * terms) & np.any(A != 0, axis=0)
    lam = float(direction @ theta0) / float(direction @ direction) if np.any(direction) else 0.0
    off_line = float(np.max(np.abs(theta0 - lam * direction)))
    if rounding_zero.any():
        reason = (f"Aᵀb is zero within rounding in coordinates {np.flatnonzero(rounding_zero).tolist()}: sign-type "
                  "steps there follow rounding noise, so the line argument does not hold")
    elif off_line > tie_tolerance(n) * max(float(np.max(np.abs(theta0))), 1e-300):
        reason = (f"θ0 is {off_line:.3g} off the line span(sign(Aᵀb)): Wilson's line argument needs θ0 on it "
                  "(θ0 = 0 included)")
    elif minibatch:
        reason = "Wilson's result is for full-batch steps (batch_size < n here)"
    elif c <= 0 or np.max(np.abs(along - c * b)) > 1e-12 * float(np.max(np.abs(A) @ np.abs(direction))):
        shown = np.array2string(along, precision=4, threshold=6)
        reason = (f"A sign(Aᵀb) = {shown} is not a positive multiple of b: Wilson's "
                  "condition fails, and for several equations sign-type descent has no closed form "
                  "(its limit can depend on the step sizes; Gunasekar et al. 2018)")
    else:
        approximation = _eps_is_zero(problem, params) or ""
        return Prediction(direction / c, WILSON, WILSON_SOURCE, "", exact=not approximation,
                          approximation=approximation, line=(np.zeros_like(direction), direction))
    return Prediction(None, WILSON, WILSON_SOURCE, reason)


def predict_general(optimizer: str, params: Mapping[str, Any], problem: Problem, batch_size: int | None) -> Prediction:
    """Predictions for n > 1 equations, each with its source and checked preconditions."""
    A, b, theta0 = problem.A, problem.b, problem.theta0
    n, d = A.shape
    minibatch = batch_size is not None and batch_size < n
    norm_kind = params.get("norm")
    rank = int(np.linalg.matrix_rank(A))
    if rank == d:  # one stationary point: every run the stopping rule accepts ends there
        unique = np.linalg.lstsq(A, b, rcond=None)[0]
        consistent = _consistent(A, b, unique)
        what = "the only solution" if consistent else "the only least-squares point (the system is inconsistent)"
        return Prediction(unique, f"θ∞ = A⁺b, {what}: A has full column rank", FULL_RANK_SOURCE, "")
    if rank == 1:  # every gradient, full or minibatch, is a multiple of one row: the one-equation theory
        if _sign_is_discontinuous(optimizer, params) and not _exactly_proportional_signs(A):
            return Prediction(None, RANK_ONE_FORMULA, RANK_ONE_SOURCE,
                              "A has rank one only within rounding (its rows' sign patterns differ): sign-type "
                              "steps see the difference, so the rank-one theory does not apply")
        if optimizer == "steepest" and norm_kind == "l1":
            why = _rows_share_one_largest_entry(A)
            if why:
                return Prediction(None, RANK_ONE_FORMULA, RANK_ONE_SOURCE, why)
        reduced = _one_equation(problem)
        prediction = predict(optimizer, params, reduced)
        note = " (rank-one A: the least-squares combination of its equations, aᵀθ = β)"
        if not prediction.formula:
            return prediction
        return prediction._replace(formula=prediction.formula + note,
                                   source=f"{RANK_ONE_SOURCE}; {prediction.source}")
    preconditioner = _fixed_preconditioner(optimizer, params, A)
    if preconditioner is not None:  # GD family (P = I), rescaled SGD (P = S²), preconditioned (P = diag)
        diagonal, formula, source = preconditioner
        root = np.sqrt(diagonal)
        point = theta0 + root * (np.linalg.pinv(A * root) @ (b - A @ theta0))
        if minibatch and not _consistent(A, b, point):
            return Prediction(None, formula, source,
                              "the system has no exact solution and the steps are stochastic (batch_size < n): the "
                              "minibatch gradients do not vanish together, so with a constant step the run never "
                              "settles, and with a decaying one where it ends along the null space of A depends on "
                              "the schedule (docs/theory.md §2.1)")
        return Prediction(point, formula, source, "")
    if optimizer in WILSON_FAMILY or (optimizer == "steepest" and norm_kind == "linf"):
        return _wilson(problem, params, minibatch)
    if optimizer == "epoch_rms_adam":
        return Prediction(None, "", "docs/theory.md §2.6; Baek, Song, Yun (2025)",
                          "with several samples epoch-RMS Adam is a per-sample-preconditioned method and its ℓ∞ "
                          "bias is not guaranteed: no closed form (measured limit and references only)")
    if optimizer == "steepest":
        return Prediction(None, "", "docs/theory.md §2.6; Gunasekar, Lee, Soudry, Srebro (ICML 2018)",
                          f"steepest descent under {norm_kind} for several equations is in general not the "
                          "minimum-norm interpolant and can depend on step sizes: no closed form")
    return Prediction(None, "", "", f"no theory for {optimizer!r} on several equations")


# ---------------------------------------------------------------- the verdict (docs/theory.md §5)

VERDICTS = ("match", "mismatch", "inconclusive", "approximate", "not_converged", "no_prediction")

#: the theories whose points compete with a prediction: a match must single one of them out
FAMILIES = {
    "GD family (sgd)": ("sgd", {}),
    "sign family (sign_sgd)": ("sign_sgd", {}),
    "rescaled SGD": ("rescaled_sgd", {}),
    "steepest ℓ1": ("steepest", {"norm": "l1", "p": 2.0, "squared": True}),
}
START = "the start θ0 (no motion)"
#: alternatives are computed only for systems up to this many entries (a few SVDs each)
ALTERNATIVES_LIMIT = 2 * 10**5


class Tolerance(NamedTuple):
    """What the stopping rule and float64 guarantee about a converged run's limit."""

    absolute: float  # a match needs ‖limit − prediction‖∞ ≤ absolute
    relative: float  # max(verdict_tol, 4·g·c), the part set by the stopping rule
    scale: float  # L = max(‖prediction − θ0‖∞, ‖b‖/‖A‖_F): the distance to travel, or the solution's size
    resolution: float  # max(steps, 1)·eps·max(‖θ0‖∞, ‖prediction‖∞, ‖limit‖∞): float64 rounding over the run
    nearest: str | None  # the nearest competing point that is not the prediction itself
    separation: float  # its distance from the prediction (inf if none)
    reason: str  # why no match or mismatch can be claimed ("" if one can)


class Comparison(NamedTuple):
    error: float | None  # ‖limit − prediction‖∞
    relative_error: float | None  # error / L (see Tolerance.scale)
    verdict: str  # one of VERDICTS
    tolerance: Tolerance | None = None


def alternatives(problem: Problem, batch_size: int | None = None,
                 references: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every point a run on ``problem`` might be claimed to reach: the start θ0 (a run that
    never moved), the points the theory families of :data:`FAMILIES` predict, and the
    reference interpolants."""
    points = {START: problem.theta0}
    if problem.A.size <= ALTERNATIVES_LIMIT:
        for name, (optimizer, params) in FAMILIES.items():
            point = predict(optimizer, params, problem, batch_size).point
            if point is not None:
                points[name] = point
    for name, point in (references or {}).items():
        points[f"the {name} interpolant"] = np.asarray(point)
    return points


def _direction_factor(problem: Problem, prediction: np.ndarray) -> float:
    """c = ‖a‖₂‖v‖∞/|aᵀv| for one equation, v = prediction − θ0 the direction of motion: the
    gradient's relative size bounds the limit's relative error along v up to this factor."""
    if problem.A.shape[0] != 1:
        return 1.0
    a, v = problem.A[0], prediction - problem.theta0
    peak_a, peak_v = float(np.max(np.abs(a))), float(np.max(np.abs(v)))
    if peak_a == 0.0 or peak_v == 0.0:
        return 1.0
    a_hat, v_hat = a / peak_a, v / peak_v
    along = abs(float(a_hat @ v_hat))
    return float(np.linalg.norm(a_hat)) / along if along > 0 else math.inf


#: points from an LP solve (HiGHS' default feasibility tolerance is 1e-7) this close to a
#: prediction, relative to the points' size, cannot be told apart from it
LP_TOLERANCE = 1e-7


def tolerance(problem: Problem, prediction: np.ndarray, limit: np.ndarray, steps: int, grad_norm: float,
              verdict_tol: float, grad_tol: float, spec: Spectrum | None,
              competitors: Mapping[str, np.ndarray], solved: frozenset = frozenset()) -> Tolerance:
    """The error a ``match`` may have, and whether a match would mean anything.

    - L = max(‖p − θ0‖∞, ‖b‖₂/‖A‖_F): errors are relative to the distance the run must
      travel, or to the size of the data's own solution when that is larger; never to ‖θ0‖,
      so a start far out in the null space of A cannot inflate the tolerance.
    - relative = max(verdict_tol, 4·g·c·κ²), g = max(grad_tol, ‖∇f(limit)‖/G*) the gradient
      the stopping rule actually accepted relative to the data's gradient scale G*, κ the
      condition number (n > 1), c the direction factor of one equation.
    - direct = (n/2)·(‖∇f(limit)‖ + ρ_d·eps·G_limit)/σ_min² for n > 1: the distance from the
      limit to the stationary set within range(Aᵀ) that this gradient allows, computed from the
      measured gradient (and its rounding) rather than estimated through κ².
    - resolution = max(steps, 1)·eps·max(‖θ0‖∞, ‖p‖∞, ‖limit‖∞): each step's addition rounds
      at eps·|θ|, so no run can be trusted closer than this.
    - absolute = max(relative·L, direct, resolution).
    - inconclusive when κ is unknown for n > 1, when 2·absolute ≥ L (the guarantee is not
      small against the problem itself), or when a competing point that is not the prediction
      itself lies within 2·absolute: then even an exact hit could not tell the theories apart.
      A competitor is the prediction itself if it lies within rounding of it ((64 + 16κ)·eps
      relative), or within :data:`LP_TOLERANCE` for the ones an LP solved (``solved``).
    """
    A, b, theta0 = problem.A, problem.b, problem.theta0
    n = A.shape[0]
    travel = float(np.max(np.abs(prediction - theta0)))
    frobenius = float(np.linalg.norm(A))
    solution_size = float(np.linalg.norm(b)) / frobenius if frobenius > 0 else 0.0
    scale = max(travel, solution_size)
    data_scale = data_gradient_scale(A, b, theta0)
    finite_gradient = grad_norm if math.isfinite(grad_norm) else 0.0
    accepted = finite_gradient / data_scale if data_scale > 0 else 0.0
    g = max(grad_tol, accepted)
    several = n > 1
    k = spec.kappa if several and spec is not None and spec.smallest > 0 else 1.0
    relative = max(verdict_tol, 4.0 * g * _direction_factor(problem, prediction) * k * k)
    direct = 0.0
    if several and spec is not None and spec.smallest > 0:
        terms = (2.0 / n) * norm(np.abs(A).T @ (np.abs(b) + np.abs(A) @ np.abs(limit)))
        floor = rounding_factor(A.shape[1]) * EPS * terms
        direct = (n / 2.0) * (finite_gradient + floor) / spec.smallest / spec.smallest  # (** would raise on overflow)
    size = max(float(np.max(np.abs(theta0))), float(np.max(np.abs(prediction))), float(np.max(np.abs(limit))))
    resolution = max(steps, 1) * EPS * size
    absolute = max(relative * scale, direct, resolution)
    same = (64.0 + 16.0 * k) * EPS  # two computed points this close (relative) are one claim
    nearest, separation = None, math.inf
    for name, point in competitors.items():
        gap = float(np.max(np.abs(point - prediction)))
        radius = max(same, LP_TOLERANCE if name in solved else 0.0) * max(size, float(np.max(np.abs(point))))
        if gap > radius and gap < separation:
            nearest, separation = name, gap
    if several and spec is None:
        reason = ("κ(A) was not computed (min(n, d) > the SVD limit), so the stopping rule's guarantee on the "
                  "limit is unknown")
    elif 2.0 * absolute >= scale:
        reason = (f"the stopping rule and float64 guarantee the limit only to ±{absolute:.2g}, which is not small "
                  f"against the scale of the problem ({scale:.2g}: the distance to travel or the solution's size)")
    elif 2.0 * absolute >= separation:
        reason = (f"the stopping rule and float64 guarantee the limit only to ±{absolute:.2g}, but {nearest} lies "
                  f"{separation:.2g} from the prediction: a match could not tell them apart")
    else:
        reason = ""
    return Tolerance(absolute, relative, scale, resolution, nearest, separation, reason)


def off_line(limit: np.ndarray, line: tuple[np.ndarray, np.ndarray]) -> float:
    """‖x − q − v·vᵀ(x − q)/vᵀv‖∞: how far ``limit`` lies from the line q + span(v)."""
    q, v = line
    x = limit - q
    vv = float(v @ v)
    return float(np.max(np.abs(x - v * (float(v @ x) / vv)))) if vv > 0 else float(np.max(np.abs(x)))


def compare(limit: np.ndarray, prediction: Prediction, status: str, tol: Tolerance | None) -> Comparison:
    """The verdict, in this order: ``no_prediction`` (no theory applies), ``not_converged``
    (the run did not pass the stopping rule), ``approximate`` (the prediction is only an
    approximation: the error is the measured deviation), ``inconclusive`` (``tol.reason``, or
    a sign-type run that left the line its theory keeps it on: rounding flipped a sign), else
    ``match`` if ‖limit − prediction‖∞ ≤ ``tol.absolute`` and ``mismatch`` otherwise."""
    if prediction.point is None:
        return Comparison(None, None, "no_prediction", tol)
    error = float(np.max(np.abs(limit - prediction.point)))
    relative = error / tol.scale if tol is not None and tol.scale > 0 else None
    if status != "converged":
        return Comparison(error, relative, "not_converged", tol)
    if not prediction.exact:
        return Comparison(error, relative, "approximate", tol)
    if tol is None or tol.reason:
        return Comparison(error, relative, "inconclusive", tol)
    if error > tol.absolute and prediction.line is not None:
        away = off_line(limit, prediction.line)
        if away > tol.absolute:
            reason = (f"the run left the line the theory keeps it on by {away:.2g} (> ±{tol.absolute:.2g}): a sign "
                      "that float64 rounding flipped, not the theory, decided where it ended")
            return Comparison(error, relative, "inconclusive", tol._replace(reason=reason))
    return Comparison(error, relative, "match" if error <= tol.absolute else "mismatch", tol)


def judge(problem: Problem, prediction: Prediction, limit: np.ndarray, status: str, *, steps: int = 0,
          grad_norm: float = 0.0, verdict_tol: float = 1e-10, grad_tol: float = 1e-12,
          kappa: float | None | str = "compute", batch_size: int | None = None,
          references: Mapping[str, np.ndarray] | None = None) -> Comparison:
    """Compare a run's limit with its prediction under the rule of :func:`tolerance`.

    ``steps`` and ``grad_norm`` are the run's (its RunResult fields); ``references`` (the
    interpolants) join the competing points. ``kappa=None`` declares the conditioning unknown
    (what a system too large for an SVD gets); otherwise the spectrum is computed here.
    A system of full column rank has one stationary point, so every theory and every
    interpolant that exists is that point: only the start competes with it.
    """
    if prediction.point is None:
        return compare(limit, prediction, status, None)
    with np.errstate(all="ignore"):  # non-finite limits and data at float64's edges give inf/NaN, judged below
        return _judge(problem, prediction, limit, status, steps, grad_norm, verdict_tol, grad_tol, kappa, batch_size,
                      references)


def _judge(problem, prediction, limit, status, steps, grad_norm, verdict_tol, grad_tol, kappa, batch_size,
           references) -> Comparison:
    spec = None if kappa is None else spectrum(problem.A)
    full_rank = spec is not None and spec.rank == problem.A.shape[1]
    if full_rank:
        competitors = {START: problem.theta0}
    else:
        competitors = alternatives(problem, batch_size, references)
    solved = frozenset(f"the {name} interpolant" for name in (references or {})) if problem.A.shape[0] > 1 else frozenset()
    if status != "converged":  # no guarantee was reached: record the tolerance a match would have needed
        grad_norm = 0.0
    tol = tolerance(problem, prediction.point, limit, steps, grad_norm, verdict_tol, grad_tol, spec, competitors,
                    solved)
    return compare(limit, prediction, status, tol)


def verdict_fields(comparison: Comparison) -> dict[str, Any]:
    """The record's fields that say how the verdict was reached (result.json)."""
    tol = comparison.tolerance
    if tol is None:
        return {"verdict_tol_used": None, "verdict_tolerance": None, "verdict_scale": None,
                "verdict_reason": None, "nearest_alternative": None}
    finite = lambda x: x if math.isfinite(x) else None  # strict JSON: an unbounded value is null
    return {
        "verdict_tol_used": finite(tol.relative),  # relative to verdict_scale
        "verdict_tolerance": finite(tol.absolute),  # the max-abs error a match may have
        "verdict_scale": finite(tol.scale),
        "verdict_resolution": finite(tol.resolution),
        "verdict_reason": tol.reason or None,
        "nearest_alternative": None if tol.nearest is None else {"name": tol.nearest, "distance": finite(tol.separation)},
    }
