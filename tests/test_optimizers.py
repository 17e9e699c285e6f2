"""Each update against its recurrence, on hand-computed steps."""

from __future__ import annotations

import numpy as np
import pytest

from implicit_bias import optimizers as O
from implicit_bias.problems import gradient, rescale_features, single_equation


def test_sgd_step():
    opt = O.sgd()
    state = opt.init(np.zeros(3))
    delta, _ = opt.update(np.array([2.0, -4.0, 0.5]), state, 0.25)
    np.testing.assert_array_equal(delta, [-0.5, 1.0, -0.125])


def test_sign_sgd_step_has_sign_of_zero_equal_zero():
    opt = O.sign_sgd()
    delta, _ = opt.update(np.array([-3.0, 0.0, 1e-300]), opt.init(np.zeros(3)), 0.1)
    np.testing.assert_array_equal(delta, [0.1, 0.0, -0.1])


def test_epoch_rms_adam_uses_the_epoch_mean_of_squared_sample_gradients():
    opt = O.epoch_rms_adam(0.0, "current")
    state = opt.init(np.zeros((3, 1)))
    samples = np.array([[3.0, 0.0, 1.0], [4.0, 0.0, -1.0]]).T  # one column per sample; mean squares: 12.5, 0, 1
    state = opt.begin_epoch(samples, state)
    np.testing.assert_allclose(state.scale[:, 0], [1 / np.sqrt(12.5), 0.0, 1.0], rtol=1e-15)
    delta, _ = opt.update(np.array([[2.0], [0.0], [-1.0]]), state, 0.5)
    np.testing.assert_allclose(delta[:, 0], [-0.5 * 2 / np.sqrt(12.5), 0.0, 0.5], rtol=1e-15)


def test_epoch_rms_adam_with_one_sample_is_sign_descent():
    opt = O.epoch_rms_adam(0.0, "current")
    g = np.array([[-2.0], [-0.2], [-0.02]])  # a column: one sample
    state = opt.begin_epoch(g, opt.init(np.zeros((3, 1))))
    delta, _ = opt.update(g, state, 0.1)
    np.testing.assert_allclose(delta, [[0.1], [0.1], [0.1]], rtol=1e-15)


def test_epoch_rms_adam_eps_adds_to_the_root():
    opt = O.epoch_rms_adam(1.0, "current")
    g = np.array([[3.0]])
    state = opt.begin_epoch(g, opt.init(np.zeros((1, 1))))
    delta, _ = opt.update(g, state, 1.0)
    np.testing.assert_allclose(delta, [[-3.0 / (3.0 + 1.0)]], rtol=1e-15)


def test_rescaled_sgd_runs_in_unit_second_moment_coordinates():
    problem = single_equation(np.array([1.0, 0.1, 0.01]), 1.0, np.array([1.0, 1.0, 1.0]))
    scaled, s = rescale_features(problem)
    np.testing.assert_allclose(s, [1.0, 10.0, 100.0], rtol=1e-15)
    np.testing.assert_allclose(scaled.A, [[1.0, 1.0, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(scaled.theta0 * s, problem.theta0, rtol=1e-15)
    assert O.rescaled_sgd().reparametrize is rescale_features


def test_rescaling_leaves_a_zero_column_alone():
    problem = single_equation(np.array([2.0, 0.0]), 1.0, None)
    _, s = rescale_features(problem)
    np.testing.assert_array_equal(s, [0.5, 1.0])


def test_gradient_of_the_squared_loss():
    problem = single_equation(np.array([1.0, 0.1, 0.01]), 1.0, None)
    theta = np.array([0.5, 1.0, 2.0])
    r = 1.0 - (0.5 + 0.1 + 0.02)
    np.testing.assert_allclose(gradient(problem, theta), -2 * r * np.array([1.0, 0.1, 0.01]), rtol=1e-15)


@pytest.mark.parametrize("name", sorted(O.OPTIMIZERS))
def test_updates_do_not_modify_their_inputs(name):
    from conftest import build_config

    opt = build_config([f"optimizer={name}"]).optimizer.built
    g = np.array([[1.0], [-2.0], [3.0]])  # a column, as the runner passes it
    state = opt.init(np.zeros((3, 1)))
    if opt.begin_epoch is not None:
        state = opt.begin_epoch(g, state)
    before = g.copy()
    opt.update(g, state, 0.1)
    np.testing.assert_array_equal(g, before)


# ---------------------------------------------------------------- the wider family, by hand

G1, G2 = np.array([2.0, -1.0, 0.0]), np.array([1.0, 1.0, 0.0])


def two_steps(opt, lr=0.1):
    state = opt.init(np.zeros(3))
    d1, state = opt.update(G1, state, lr)
    d2, state = opt.update(G2, state, lr)
    return d1, d2


def test_heavy_ball_steps():
    d1, d2 = two_steps(O.momentum(0.5, "polyak"))
    np.testing.assert_allclose(d1, [-0.2, 0.1, 0.0])
    np.testing.assert_allclose(d2, [-0.1 + 0.5 * -0.2, -0.1 + 0.5 * 0.1, 0.0])


def test_heavy_ball_conventions_agree_for_a_constant_step_and_differ_under_a_schedule():
    """polyak: Δ_t = −α_t g_t + μΔ_{t−1}; torch/optax: b_t = μb_{t−1} + g_t, Δ_t = −α_t b_t."""
    polyak, torch = O.momentum(0.5, "polyak"), O.momentum(0.5, "torch")
    np.testing.assert_allclose(two_steps(torch)[1], two_steps(polyak)[1], rtol=1e-15)

    def steps(opt, rates):
        state, out = opt.init(np.zeros(3)), []
        for g, lr in zip((G1, G2), rates):
            delta, state = opt.update(g, state, lr)
            out.append(delta)
        return out

    rates = (0.1, 0.05)  # a decaying schedule
    p1, p2 = steps(polyak, rates)
    t1, t2 = steps(torch, rates)
    np.testing.assert_array_equal(p1, t1)
    np.testing.assert_allclose(t2, -0.05 * (0.5 * G1 + G2), rtol=1e-15)  # torch.optim.SGD's second step
    np.testing.assert_allclose(p2, -0.05 * G2 + 0.5 * (-0.1 * G1), rtol=1e-15)
    assert np.max(np.abs(t2 - p2)) > 0.02


def test_adam_bias_correction_is_a_power_accurate_to_an_ulp_over_long_runs():
    """β^t is β ** t (as torch.optim computes it), not a running product whose rounding grows
    like t·eps: checked against 40-digit arithmetic at β2 = 0.99999 for t up to 200 000."""
    from decimal import Decimal, getcontext

    getcontext().prec = 40
    beta2 = 0.99999
    power = O._powers(beta2)
    worst_power = worst_factor = worst_product_factor = 0.0
    product = 1.0
    for t in range(1, 200_001):
        product *= beta2
        if t % 997 == 0:
            exact = Decimal(beta2) ** t
            worst_power = max(worst_power, abs(float((Decimal(power(t)) - exact) / exact)))
            if t > 1000:  # 1 − β^t: the rounding of β^t amplified by β^t/(1 − β^t) ≤ 100 here
                worst_factor = max(worst_factor, abs(float((Decimal(1 - power(t)) - (1 - exact)) / (1 - exact))))
                worst_product_factor = max(worst_product_factor,
                                           abs(float((Decimal(1 - product) - (1 - exact)) / (1 - exact))))
    assert worst_power <= np.finfo(float).eps  # within an ulp at every t
    assert worst_factor < 4e-15  # 100 × half an ulp, and no growth with t
    assert worst_product_factor > 10 * worst_factor  # the running product it replaces is measurably worse

    # and the update uses it: with g = 1 throughout, m̂/√v̂ = 1 to within a few ulps
    opt = O.adam(0.5, beta2, 0.0, True, "outside")
    state = opt.init(np.zeros(1))
    for _ in range(5000):
        delta, state = opt.update(np.array([1.0]), state, 1.0)
    assert state.count == 5000
    np.testing.assert_allclose(delta, [-1.0], rtol=1e-14)


def test_adam_batched_powers_are_the_scalar_powers():
    """A member's β^t in a batch is bit for bit the value a single run computes."""
    betas = np.array([0.9, 0.99999, 0.9, 0.5])[:, None, None]
    powers = O._powers(betas)
    for t in (1, 7, 1000, 123_457):
        batched = powers(t)
        assert batched.shape == (4, 1, 1)
        for j, beta in enumerate(betas.ravel().tolist()):
            assert batched[j, 0, 0] == O._powers(beta)(t)


def test_nesterov_steps():
    d1, d2 = two_steps(O.nesterov(0.5))
    b1 = G1
    np.testing.assert_allclose(d1, -0.1 * (G1 + 0.5 * b1))
    b2 = 0.5 * b1 + G2
    np.testing.assert_allclose(d2, -0.1 * (G2 + 0.5 * b2))


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("placement", ["outside", "inside"])
def test_adam_steps(bias_correction, placement):
    b1, b2, eps = 0.9, 0.99, 1e-3
    d1, d2 = two_steps(O.adam(b1, b2, eps, bias_correction, placement))
    m, v, expected = np.zeros(3), np.zeros(3), []
    for t, g in enumerate((G1, G2), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = (m / (1 - b1**t), v / (1 - b2**t)) if bias_correction else (m, v)
        den = np.sqrt(vh) + eps if placement == "outside" else np.sqrt(vh + eps)
        expected.append(-0.1 * mh / den)
    np.testing.assert_allclose(d1, expected[0], rtol=1e-14)
    np.testing.assert_allclose(d2, expected[1], rtol=1e-14)


def test_adam_first_step_with_bias_correction_and_no_eps_is_a_sign_step():
    d1, _ = two_steps(O.adam(0.9, 0.999, 0.0, True, "outside"))
    np.testing.assert_allclose(d1, -0.1 * np.sign(G1), rtol=1e-14)


def test_adagrad_steps():
    d1, d2 = two_steps(O.adagrad(0.0))
    np.testing.assert_allclose(d1, [-0.1, 0.1, 0.0])
    np.testing.assert_allclose(d2, -0.1 * G2 / np.sqrt([5.0, 2.0, 1.0]) * [1, 1, 0], rtol=1e-14)


def test_rmsprop_steps():
    d1, d2 = two_steps(O.rmsprop(0.9, 0.0))
    v1 = 0.1 * G1**2
    np.testing.assert_allclose(d1, -0.1 * np.divide(G1, np.sqrt(v1), out=np.zeros(3), where=v1 > 0), rtol=1e-14)
    v2 = 0.9 * v1 + 0.1 * G2**2
    np.testing.assert_allclose(d2, -0.1 * np.divide(G2, np.sqrt(v2), out=np.zeros(3), where=v2 > 0), rtol=1e-14)


@pytest.mark.parametrize("kind", ["l2", "linf", "l1", "lp"])
def test_steepest_uses_twice_the_rate_as_alpha(kind):
    from implicit_bias.norms import penalized_step

    delta, _ = O.steepest(kind, 3.0, True).update(G1, O.EmptyState(), 0.1)
    np.testing.assert_allclose(delta, penalized_step(G1, 0.2, kind, 3.0), rtol=1e-15)
    if kind == "l2":
        np.testing.assert_allclose(delta, O.sgd().update(G1, O.EmptyState(), 0.1)[0], rtol=1e-15)


def test_lp_steepest_step_by_hand():
    # p = 3, q = 3/2, g = [3, −1, 0], α = 2: u = −‖g‖_q^{2−q} sign(g)|g|^{q−1}
    g = np.array([3.0, -1.0, 0.0])
    norm_q = (3.0**1.5 + 1.0) ** (1 / 1.5)
    expected = -np.sqrt(norm_q) * np.array([np.sqrt(3.0), -1.0, 0.0])
    delta, _ = O.steepest("lp", 3.0, True).update(g, O.EmptyState(), 1.0)  # α = 2·lr = 2
    np.testing.assert_allclose(delta, expected, rtol=1e-14)
