"""The theory registry against independent computations (numpy pinv / lstsq), and its preconditions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from implicit_bias.optimizers import OPTIMIZERS, rescaled_sgd, sgd
from implicit_bias.predictions import THEORIES, judge, predict
from implicit_bias.problems import Problem, single_equation
from implicit_bias.runner import RunSettings, run
from implicit_bias.schedules import constant

coords = st.floats(-10, 10, allow_nan=False).map(lambda x: 0.0 if abs(x) < 1e-3 else x)


@st.composite
def rank_one_problems(draw):
    d = draw(st.integers(1, 8))
    a = draw(arrays(np.float64, d, elements=coords).filter(lambda a: np.max(np.abs(a)) > 0.1))
    b = draw(st.floats(-10, 10, allow_nan=False))
    theta0 = draw(arrays(np.float64, d, elements=coords))
    return single_equation(a, b, theta0)


def gd_reference(p: Problem) -> np.ndarray:
    """θ0 + A⁺(b − Aθ0) (docs/theory.md §2.1)."""
    return p.theta0 + np.linalg.pinv(p.A) @ (p.b - p.A @ p.theta0)


def preconditioned_reference(p: Problem, P: np.ndarray) -> np.ndarray:
    """θ0 + P^{1/2}(A P^{1/2})⁺(b − Aθ0) for diagonal P (docs/theory.md §2.2)."""
    root = np.sqrt(P)
    return p.theta0 + root * (np.linalg.pinv(p.A * root) @ (p.b - p.A @ p.theta0))


def line_reference(p: Problem, v: np.ndarray) -> np.ndarray:
    """The point of θ0 + span(v) solving the equation, by least squares in the line coordinate."""
    c, *_ = np.linalg.lstsq((p.A @ v)[:, None], p.b - p.A @ p.theta0, rcond=None)
    return p.theta0 + v * c[0]


def scale(p: Problem) -> float:
    return max(1.0, float(np.max(np.abs(gd_reference(p)))))


@settings(max_examples=200, deadline=None)
@given(rank_one_problems())
def test_gd_family_prediction_is_the_pinv_formula(p):
    got = predict("sgd", {}, p).point
    assert np.max(np.abs(got - gd_reference(p))) <= 1e-12 * scale(p)


@settings(max_examples=200, deadline=None)
@given(rank_one_problems())
def test_rescaled_sgd_prediction_is_the_preconditioned_formula(p):
    rms = np.sqrt(np.mean(p.A**2, axis=0))
    P = np.where(rms > 0, 1.0 / np.where(rms > 0, rms, 1.0) ** 2, 1.0)
    got = predict("rescaled_sgd", {}, p).point
    expected = preconditioned_reference(p, P)
    assert np.max(np.abs(got - expected)) <= 1e-12 * max(1.0, float(np.max(np.abs(expected))))


@settings(max_examples=200, deadline=None)
@given(rank_one_problems(), st.sampled_from(["sign_sgd", "epoch_rms_adam"]))
def test_sign_family_prediction_solves_the_equation_on_the_sign_line(p, name):
    params = {"eps": 0.0} if name == "epoch_rms_adam" else {}
    got = predict(name, params, p).point
    expected = line_reference(p, np.sign(p.A[0]))
    assert np.max(np.abs(got - expected)) <= 1e-12 * max(1.0, float(np.max(np.abs(expected))))
    assert abs(p.A[0] @ got - p.b[0]) <= 1e-12 * max(1.0, float(np.abs(p.A[0]) @ np.abs(got)))


@settings(max_examples=25, deadline=None)

def outside_supported_range(p: Problem) -> str:
    """Why the runner refuses these data before the first step ("" if it runs them)."""
    from implicit_bias.tolerances import data_gradient_scale, norm, out_of_range

    nontrivial = bool(np.any(p.b) or np.any(p.A @ p.theta0))
    return out_of_range(data_gradient_scale(p.A, p.b, p.theta0), nontrivial, norm(p.b), norm(p.b - p.A @ p.theta0))


@given(rank_one_problems(), st.sampled_from(["sgd", "rescaled_sgd"]))
def test_gd_runs_converge_to_the_prediction_on_random_rank_one_data(p, name):
    opt = {"sgd": sgd, "rescaled_sgd": rescaled_sgd}[name]()
    work = p if opt.reparametrize is None else opt.reparametrize(p)[0]
    lr = 0.4 / float(work.A[0] @ work.A[0])  # inside GD's convergent range 0 < lr < 1/‖a‖²
    result = run(p, opt, constant(lr), RunSettings(max_steps=20_000))
    if outside_supported_range(p):
        assert result.status == "out_of_range"  # data beyond float64's supported range say so
        return
    assert result.status == "converged", result.message
    pred = predict(name, {}, p).point
    assert np.max(np.abs(result.theta - pred)) <= 1e-9 * max(1.0, float(np.max(np.abs(pred))))


def test_homework_predictions():
    p = single_equation(np.array([1.0, 0.1, 0.01]), 1.0, None)
    np.testing.assert_allclose(predict("sgd", {}, p).point, np.array([1.0, 0.1, 0.01]) / 1.0101, rtol=1e-15)
    np.testing.assert_allclose(predict("sign_sgd", {}, p).point, np.full(3, 1 / 1.11), rtol=1e-15)
    np.testing.assert_allclose(predict("epoch_rms_adam", {"eps": 0.0}, p).point, np.full(3, 1 / 1.11), rtol=1e-15)
    np.testing.assert_allclose(predict("rescaled_sgd", {}, p).point, [1 / 3, 10 / 3, 100 / 3], rtol=1e-15)


def test_every_optimizer_has_a_theory_with_a_source():
    assert set(THEORIES) == set(OPTIMIZERS)
    for theory in THEORIES.values():
        assert theory.source


@pytest.mark.parametrize("name", ["epoch_rms_adam", "adam", "adagrad", "rmsprop"])
def test_eps_above_zero_makes_the_sign_prediction_approximate_and_says_why(name):
    p = single_equation(np.array([1.0, 0.1, 0.01]), 1.0, None)
    exact = predict(name, {"eps": 0.0}, p)
    approximate = predict(name, {"eps": 1e-8}, p)
    assert exact.exact and not approximate.exact
    np.testing.assert_array_equal(approximate.point, exact.point)
    assert "eps" in approximate.approximation
    close = exact.point + 1e-12
    assert judge(p, approximate, close, "converged").verdict == "approximate"
    assert judge(p, exact, close, "converged").verdict == "match"


ALL_PARAMS = {"eps": 0.0, "norm": "lp", "p": 3.0, "diagonal": [1.0, 2.0, 3.0]}


@pytest.mark.parametrize("name", sorted(THEORIES))
def test_several_equations_get_the_general_theory_or_a_reason(name):
    p = Problem(np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), np.array([1.0, 2.0]), np.zeros(3))
    prediction = predict(name, {**ALL_PARAMS, "norm": "l1"}, p)
    assert (prediction.point is None) == bool(prediction.reason)
    if prediction.point is not None:
        np.testing.assert_allclose(p.A @ prediction.point, p.b, atol=1e-12)


def test_unregistered_optimizer_gets_no_prediction():
    p = single_equation(np.array([1.0]), 1.0, None)
    assert predict("adamw", {}, p).point is None


def test_compare_verdicts():
    p = single_equation(np.array([1.0, 0.1, 0.01]), 1.0, None)
    prediction = predict("sgd", {}, p)  # the run travels ‖prediction − θ0‖∞ = 0.990…: the scale
    close = prediction.point + 5e-11
    comparison = judge(p, prediction, close, "converged")
    assert comparison.verdict == "match"
    assert comparison.error == pytest.approx(5e-11)
    assert comparison.relative_error == pytest.approx(5e-11 / 0.99000099000099)
    assert judge(p, prediction, close + 1e-9, "converged").verdict == "mismatch"
    assert judge(p, prediction, close, "max_steps").verdict == "not_converged"
    two = Problem(np.eye(2, 3), np.ones(2), np.zeros(3))
    none = predict("epoch_rms_adam", {"eps": 0.0}, two)
    assert judge(two, none, np.zeros(3), "converged")[:3] == (None, None, "no_prediction")


def test_the_tolerance_is_the_distance_to_travel_not_the_size_of_the_start():
    """A start far out in the null space of a must not inflate the tolerance: the run still
    has to travel 0.8, and an error of 1e-3 in that travel is a mismatch."""
    p = single_equation(np.array([1.0, 0.0]), 1.0, np.array([0.0, 1e6]))
    prediction = predict("sgd", {}, p)  # [1, 1e6]: the second coordinate never moves
    assert judge(p, prediction, prediction.point + np.array([1e-11, 0.0]), "converged").verdict == "match"
    assert judge(p, prediction, prediction.point + np.array([1e-3, 0.0]), "converged").verdict == "mismatch"


@pytest.mark.parametrize("magnitude", [1e-200, 1e200])
def test_predictions_survive_extreme_magnitudes(magnitude):
    p = single_equation(np.array([magnitude, -magnitude / 2]), 1.0, None)
    for name in THEORIES:
        point = predict(name, {**ALL_PARAMS, "diagonal": [1.0, 2.0]}, p).point
        assert point is not None and np.all(np.isfinite(point)), name
        assert p.A[0] @ point == pytest.approx(1.0, rel=1e-12), name


@st.composite
def dense_rank_one_problems(draw):
    """All |a_i| ≥ 0.1, so the min-ℓ∞ displacement onto the plane is unique."""
    d = draw(st.integers(1, 6))
    magnitudes = draw(arrays(np.float64, d, elements=st.floats(0.1, 10)))
    signs = draw(arrays(np.float64, d, elements=st.sampled_from([-1.0, 1.0])))
    b = draw(st.floats(-10, 10, allow_nan=False))
    theta0 = draw(arrays(np.float64, d, elements=coords))
    return single_equation(magnitudes * signs, b, theta0)


@settings(max_examples=100, deadline=None)
@given(dense_rank_one_problems())
def test_sign_prediction_is_the_min_linf_displacement_found_by_an_lp(p):
    """Independent of the direction table: min ‖θ − θ0‖∞ s.t. aᵀθ = b, by scipy's HiGHS LP."""
    from scipy.optimize import linprog

    d = p.A.shape[1]
    # variables (θ, t): minimize t subject to ±(θ − θ0) ≤ t and aᵀθ = b
    eye = np.eye(d)
    A_ub = np.block([[eye, -np.ones((d, 1))], [-eye, -np.ones((d, 1))]])
    b_ub = np.concatenate([p.theta0, -p.theta0])
    A_eq = np.concatenate([p.A[0], [0.0]])[None, :]
    lp = linprog(np.r_[np.zeros(d), 1.0], A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=p.b,
                 bounds=[(None, None)] * (d + 1), method="highs")
    assert lp.status == 0
    got = predict("sign_sgd", {}, p).point
    assert np.max(np.abs(got - lp.x[:d])) <= 1e-7 * max(1.0, float(np.max(np.abs(got))))


@settings(max_examples=100, deadline=None)
@given(rank_one_problems())
def test_sign_prediction_from_zero_is_wilsons_closed_form(p):
    """Wilson et al. 2017 with n = 1: from θ0 = 0 the limit is sign(a) b / ‖a‖₁."""
    a, b = p.A[0], p.b[0]
    got = predict("epoch_rms_adam", {"eps": 0.0}, single_equation(a, b, None)).point
    expected = np.sign(a) * b / np.sum(np.abs(a))
    assert np.max(np.abs(got - expected)) <= 1e-12 * max(1.0, float(np.max(np.abs(expected))))


@settings(max_examples=25, deadline=None)
@given(rank_one_problems(), st.sampled_from(["sign_sgd", "epoch_rms_adam"]))
def test_sign_runs_converge_to_the_prediction_on_random_rank_one_data(p, name):
    from implicit_bias.optimizers import epoch_rms_adam, sign_sgd
    from implicit_bias.schedules import exponential

    opt = sign_sgd() if name == "sign_sgd" else epoch_rms_adam(0.0, "current")
    a, b, theta0 = p.A[0], p.b[0], p.theta0
    travel = abs(b - a @ theta0) / np.sum(np.abs(a))  # each coordinate moves this far
    # geometric steps with γ ≥ 1/2 and total lr/(1 − γ) = 2·travel reach the limit (docs/theory.md §1)
    lr = travel / 5 if travel > 0 else 1e-3  # a rate on the scale of the problem
    result = run(p, opt, exponential(lr, 0.9), RunSettings(max_steps=20_000))
    if outside_supported_range(p):
        assert result.status == "out_of_range"  # data beyond float64's supported range say so
        return
    assert result.status == "converged", result.message
    pred = predict(name, {"eps": 0.0}, p).point
    assert np.max(np.abs(result.theta - pred)) <= 1e-9 * max(1.0, float(np.max(np.abs(pred))))
