"""The theory registry: which closed form predicts which optimizer's limit, and when.

Which theory predicts which optimizer is a scientific claim, so it lives in one table,
:data:`THEORIES`, each entry with its formula, its source and its preconditions. A
prediction is made only when every precondition holds; otherwise the record says
"no prediction" and names the precondition that failed.

Rank-one data (THEORY.md §2, last bullet): with one equation aᵀθ = b every update of these
optimizers is a multiple of one fixed direction v, so the iterates stay on the line
θ0 + span(v) and, if they converge to a solution, the limit is

    θ∞ = θ0 + v (b − aᵀθ0) / (aᵀv).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .norms import penalized_step
from .problems import Problem, feature_scale

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


def _eps_is_zero(problem: Problem, params: Mapping[str, Any]) -> str | None:
    if params.get("eps", 0.0) != 0.0:
        return (
            f"eps = {params['eps']:g} > 0: once the gradients shrink below eps the method behaves "
            "like GD with step lr/eps, so the limit drifts off the sign line by an amount that "
            "grows with eps; the sign-line point is reported as an approximation and the "
            "record's error is the measured drift (THEORY.md §4)"
        )
    return None


def _unique_largest_entry(problem: Problem, params: Mapping[str, Any]) -> str | None:
    if params.get("norm") != "l1" or problem.A.shape[0] != 1:
        return None
    magnitudes = np.abs(problem.A[0])
    largest = np.flatnonzero(magnitudes == magnitudes.max())
    if largest.size > 1:
        return (
            f"coordinates {largest.tolist()} tie for the largest |a_i|: the steepest ℓ1 direction is "
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
GD_SOURCE = "THEORY.md §1-2: GD moves only along a (Gunasekar, Lee, Soudry, Srebro, ICML 2018)"
ADAPTIVE_SOURCE = (
    "THEORY.md §2: with one sample every gradient is a multiple of a, so m_i/√v_i = sign(a_i)·c_t "
    "and the step moves along sign(a) (Wilson, Roelofs, Stern, Srebro, Recht, NeurIPS 2017)"
)


def _preconditioned(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """s² ⊙ a, evaluated as s ⊙ (s ⊙ a) so that s² cannot overflow."""
    return s * (s * a)


SIGN_SOURCE = (
    "THEORY.md §1-2: with one sample the epoch mean of g_i² is g_i², so M_t∇f = sign(∇f) and "
    "every step moves along sign(a) (Wilson, Roelofs, Stern, Srebro, Recht, NeurIPS 2017: "
    "the condition A sign(Aᵀb) = c b holds with c = ‖a‖₁)"
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
            "THEORY.md §2-3: the steepest-descent step for a norm is a fixed direction times a scalar "
            "when every gradient is a multiple of a (Gunasekar et al. 2018; Bernstein & Newhouse 2024)"
        ),
        checks=(_unique_largest_entry,),
    ),
    "preconditioned": Theory(
        direction=lambda a, params: np.asarray(params["diagonal"]) * a,
        direction_text="v = P a",
        source="THEORY.md §2: θ ← θ − α P ∇f moves along P a when every gradient is a multiple of a",
    ),
    "adam": Theory(lambda a, params: np.sign(a), "v = sign(a)", ADAPTIVE_SOURCE, approximations=(_eps_is_zero,)),
    "adagrad": Theory(lambda a, params: np.sign(a), "v = sign(a)", ADAPTIVE_SOURCE, approximations=(_eps_is_zero,)),
    "rmsprop": Theory(lambda a, params: np.sign(a), "v = sign(a)", ADAPTIVE_SOURCE, approximations=(_eps_is_zero,)),
    "sign_sgd": Theory(
        direction=lambda a, params: np.sign(a),
        direction_text="v = sign(a)",
        source="THEORY.md §1-2: every signSGD step is ±α_t sign(a)",
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
            "THEORY.md §1-2: SGD on features rescaled by s moves θ along s² ⊙ a "
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
    a_max, v_max = float(np.max(np.abs(a))), float(np.max(np.abs(v)))
    a_hat, v_hat = a / a_max, v / v_max
    along = float(a_hat @ v_hat)
    if abs(along) <= 1e-12 * float(np.linalg.norm(a_hat) * np.linalg.norm(v_hat)):
        return Prediction(None, formula, theory.source, "aᵀv = 0: the update direction never changes aᵀθ")
    point = theta0 + v_hat * ((b - a @ theta0) / (a_max * along))
    return Prediction(point, formula, theory.source, "", exact=not approximation, approximation=approximation)


# ---------------------------------------------------------------- several equations (THEORY.md §2)

GD_FAMILY = ("sgd", "momentum", "nesterov")
WILSON_FAMILY = ("adam", "adagrad", "rmsprop", "sign_sgd")
GENERAL_GD = "θ∞ = θ0 + A⁺(b − Aθ0)"
GENERAL_PRECONDITIONED = "θ∞ = θ0 + P^{1/2}(A P^{1/2})⁺(b − Aθ0)"
WILSON = "θ∞ = sign(Aᵀb)/c when A sign(Aᵀb) = c·b and θ0 = 0"
GD_GENERAL_SOURCE = ("THEORY.md §2: GD, SGD, heavy ball and Nesterov stay in θ0 + range(Aᵀ) (Gunasekar, Lee, "
                     "Soudry, Srebro, ICML 2018; Azizan & Hassibi, ICLR 2019 for per-sample SGD)")
WILSON_SOURCE = ("THEORY.md §2: Wilson, Roelofs, Stern, Srebro, Recht (NeurIPS 2017): if A sign(Aᵀb) = c·b, every "
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
    source = ("THEORY.md §2: a fixed preconditioner P keeps θ in θ0 + P range(Aᵀ); rescaled SGD is P = S², "
              "S = diag(1/rms of each feature)")
    if optimizer == "rescaled_sgd":
        return feature_scale(A) ** 2, GENERAL_PRECONDITIONED, source
    if optimizer == "preconditioned":
        return np.asarray(params["diagonal"]), GENERAL_PRECONDITIONED, source
    return None


def predict_general(optimizer: str, params: Mapping[str, Any], problem: Problem, batch_size: int | None) -> Prediction:
    """Predictions for n > 1 equations, each with its source and checked preconditions."""
    A, b, theta0 = problem.A, problem.b, problem.theta0
    n, d = A.shape
    minibatch = batch_size is not None and batch_size < n
    norm_kind = params.get("norm")
    rank = int(np.linalg.matrix_rank(A))
    if rank == 1 and not minibatch:  # every gradient is a multiple of one row: the one-equation theory
        reduced = _one_equation(problem)
        prediction = predict(optimizer, params, reduced)
        note = " (rank-one A: the least-squares combination of its equations, aᵀθ = β)"
        return prediction._replace(formula=prediction.formula + note) if prediction.formula else prediction
    if rank == d:
        unique = np.linalg.lstsq(A, b, rcond=None)[0]
        if _consistent(A, b, unique):
            return Prediction(unique, "θ∞ = A⁺b, the only solution (A has full column rank)",
                              "linear algebra: a consistent system of full column rank has one solution, so every "
                              "run that converges to a solution ends there", "")
    preconditioner = _fixed_preconditioner(optimizer, params, A)
    if preconditioner is not None:  # GD family (P = I), rescaled SGD (P = S²), preconditioned (P = diag)
        diagonal, formula, source = preconditioner
        root = np.sqrt(diagonal)
        point = theta0 + root * (np.linalg.pinv(A * root) @ (b - A @ theta0))
        if minibatch and not _consistent(A, b, point):
            return Prediction(None, formula, source,
                              "the system has no exact solution and the steps are stochastic (batch_size < n): "
                              "SGD's limit then depends on the step-size schedule (a constant step never settles)")
        return Prediction(point, formula, source, "")
    if optimizer in WILSON_FAMILY or (optimizer == "steepest" and norm_kind == "linf"):
        direction = np.sign(A.T @ b)
        along = A @ direction
        scale = float(b @ b)
        c = float(along @ b) / scale if scale > 0 else 0.0
        if np.any(theta0 != 0):
            reason = "Wilson's result needs θ0 = 0"
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
                              approximation=approximation)
        return Prediction(None, WILSON, WILSON_SOURCE, reason)
    if optimizer == "epoch_rms_adam":
        return Prediction(None, "", "THEORY.md §2; Baek, Song, Yun (2025)",
                          "with several samples epoch-RMS Adam is a per-sample-preconditioned method and its ℓ∞ "
                          "bias is not guaranteed: no closed form (measured limit and references only)")
    if optimizer == "steepest":
        return Prediction(None, "", "THEORY.md §2; Gunasekar et al. (2018)",
                          f"steepest descent under {norm_kind} for several equations is in general not the "
                          "minimum-norm interpolant and can depend on step sizes: no closed form")
    return Prediction(None, "", "", f"no theory for {optimizer!r} on several equations")


def verdict_tolerance(verdict_tol: float, grad_tol: float, kappa: float | None) -> float:
    """The relative error a ``match`` may have: max(verdict_tol, 4 · grad_tol · κ(A)²).

    The stopping rule bounds the gradient relative to the size of its terms. For one equation
    that bounds the error of the limit by a few × grad_tol (README, "Why these numbers"); for
    several equations the error can be up to about κ(A)² times the relative gradient, so an
    ill-conditioned system gets the tolerance its stopping rule can actually guarantee (lower
    grad_tol to tighten it). κ unknown (a very large A): verdict_tol.
    """
    return max(verdict_tol, 4.0 * grad_tol * (kappa or 1.0) ** 2)


class Comparison(NamedTuple):
    error: float | None  # ‖limit − prediction‖∞
    relative_error: float | None  # error / max(‖prediction‖∞, ‖θ0‖∞)
    verdict: str  # "match", "mismatch", "approximate", "not_converged" or "no_prediction"


def compare(limit: np.ndarray, prediction: Prediction, status: str, tol: float, theta0: np.ndarray) -> Comparison:
    """Error = ‖limit − prediction‖∞; ``match`` needs a converged run and error ≤ tol · scale.

    An approximate prediction gets no match/mismatch: its verdict is ``approximate`` and its
    error is the measured deviation from it.

    scale = max(‖prediction‖∞, ‖θ0‖∞), the size of the points involved, so the verdict means
    the same for data of any magnitude (scale 1 if both are 0, where the limit must be 0).
    """
    if prediction.point is None:
        return Comparison(None, None, "no_prediction")
    error = float(np.max(np.abs(limit - prediction.point)))
    scale = max(float(np.max(np.abs(prediction.point))), float(np.max(np.abs(theta0)))) or 1.0
    relative = error / scale
    if status != "converged":
        return Comparison(error, relative, "not_converged")
    if not prediction.exact:
        return Comparison(error, relative, "approximate")
    return Comparison(error, relative, "match" if relative <= tol else "mismatch")
