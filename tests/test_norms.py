"""Closed-form penalized linear improvement against an exact numerical solution of the same problem.

For ℓ1 and ℓ∞ the objective gᵀΔ + (1/α)‖Δ‖² is not smooth, so derivative-free minimizers stop
above the optimum. Instead: for a radius t, min_{‖Δ‖≤t} gᵀΔ is a linear program (HiGHS), and
the outer problem in t is one-dimensional and convex. For ℓ2 and ℓp the objective is smooth
and a quasi-Newton solve from several starts suffices. Objective values are compared.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import linprog, minimize, minimize_scalar

from implicit_bias import norms
from implicit_bias.optimizers import steepest
from implicit_bias.params import ConfigError

gradients = arrays(np.float64, st.integers(1, 6), elements=st.floats(-5, 5, allow_nan=False)).filter(
    lambda g: np.max(np.abs(g)) > 1e-3
)


def objective(g, delta, alpha, kind, p=None):
    return float(g @ delta) + norms.norm(delta, kind, p) ** 2 / alpha


def linear_over_ball(g, t, kind):
    """min gᵀΔ over ‖Δ‖ ≤ t as an LP (variables Δ⁺, Δ⁻ ≥ 0 for ℓ1; box bounds for ℓ∞)."""
    d = g.size
    if kind == "linf":
        lp = linprog(g, bounds=[(-t, t)] * d, method="highs")
    else:  # Δ = Δ⁺ − Δ⁻, Σ(Δ⁺ + Δ⁻) ≤ t
        lp = linprog(np.r_[g, -g], A_ub=np.ones((1, 2 * d)), b_ub=[t], bounds=[(0, None)] * (2 * d), method="highs")
    assert lp.status == 0
    return lp.fun


@settings(max_examples=60, deadline=None)
@given(gradients, st.floats(0.05, 5), st.sampled_from(["linf", "l1"]))
def test_non_smooth_closed_forms_match_the_lp_optimum(g, alpha, kind):
    closed = objective(g, norms.penalized_step(g, alpha, kind), alpha, kind)
    upper = 2 * alpha * float(np.sum(np.abs(g)))
    exact = minimize_scalar(lambda t: linear_over_ball(g, t, kind) + t * t / alpha,
                            bounds=(0.0, upper), method="bounded", options={"xatol": 1e-12})
    assert closed <= exact.fun + 1e-9 * (1 + abs(exact.fun))
    assert closed >= exact.fun - 1e-6 * (1 + abs(exact.fun))  # the LP optimum is not beaten by much


@settings(max_examples=60, deadline=None)
@given(gradients, st.floats(0.05, 5), st.sampled_from([("l2", None), ("lp", 1.5), ("lp", 3.0), ("lp", 7.0)]))
def test_smooth_closed_forms_match_a_numerical_minimum(g, alpha, norm):
    kind, p = norm
    closed_step = norms.penalized_step(g, alpha, kind, p)
    closed = objective(g, closed_step, alpha, kind, p)
    rng = np.random.default_rng(0)
    best = min(
        minimize(lambda x: objective(g, x, alpha, kind, p), rng.normal(size=g.size) * np.max(np.abs(closed_step)),
                 method="BFGS", options={"gtol": 1e-12}).fun
        for _ in range(3)
    )
    assert closed <= best + 1e-9 * (1 + abs(best))
    assert closed >= best - 1e-6 * (1 + abs(best))


def test_closed_forms_by_hand():
    g = np.array([3.0, -1.0, 0.0])
    np.testing.assert_allclose(norms.penalized_step(g, 2.0, "l2"), [-3.0, 1.0, 0.0])
    np.testing.assert_allclose(norms.penalized_step(g, 2.0, "linf"), [-4.0, 4.0, 0.0])  # ‖g‖₁ = 4
    np.testing.assert_allclose(norms.penalized_step(g, 2.0, "l1"), [-3.0, 0.0, 0.0])  # ‖g‖∞ e_1
    # ℓp with p = 2 is ℓ2
    np.testing.assert_allclose(norms.penalized_step(g, 2.0, "lp", 2.0), [-3.0, 1.0, 0.0], rtol=1e-15)
    # ties in ℓ1 go to the lowest index
    np.testing.assert_allclose(norms.penalized_step(np.array([-2.0, 2.0]), 1.0, "l1"), [1.0, 0.0])


def test_lp_step_does_not_overflow_for_extreme_exponents():
    g = np.array([1e-200, 3e-201, 0.0])
    for p in (1.01, 100.0):
        step = norms.penalized_step(g, 1.0, "lp", p)
        assert np.all(np.isfinite(step)) and step[0] < 0


def test_dual_norms():
    g = np.array([3.0, -4.0])
    assert norms.dual_norm(g, "l2") == pytest.approx(5.0)
    assert norms.dual_norm(g, "linf") == pytest.approx(7.0)
    assert norms.dual_norm(g, "l1") == pytest.approx(4.0)
    assert norms.dual_norm(g, "lp", 2.0) == pytest.approx(5.0)


def test_the_unsquared_penalty_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="ill-posed.*unbounded below"):
        norms.check_penalty(squared=False)
    with pytest.raises(ConfigError, match="'squared'.*ill-posed"):
        steepest("linf", 3.0, squared=False)
