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
    opt = O.epoch_rms_adam(0.0)
    state = opt.init(np.zeros(3))
    samples = np.array([[3.0, 0.0, 1.0], [4.0, 0.0, -1.0]])  # mean squares: 12.5, 0, 1
    state = opt.begin_epoch(samples, state)
    np.testing.assert_allclose(state.scale, [1 / np.sqrt(12.5), 0.0, 1.0], rtol=1e-15)
    delta, _ = opt.update(np.array([2.0, 0.0, -1.0]), state, 0.5)
    np.testing.assert_allclose(delta, [-0.5 * 2 / np.sqrt(12.5), 0.0, 0.5], rtol=1e-15)


def test_epoch_rms_adam_with_one_sample_is_sign_descent():
    opt = O.epoch_rms_adam(0.0)
    g = np.array([-2.0, -0.2, -0.02])
    state = opt.begin_epoch(g[np.newaxis], opt.init(np.zeros(3)))
    delta, _ = opt.update(g, state, 0.1)
    np.testing.assert_allclose(delta, [0.1, 0.1, 0.1], rtol=1e-15)


def test_epoch_rms_adam_eps_adds_to_the_root():
    opt = O.epoch_rms_adam(1.0)
    g = np.array([3.0])
    state = opt.begin_epoch(g[np.newaxis], opt.init(np.zeros(1)))
    delta, _ = opt.update(g, state, 1.0)
    np.testing.assert_allclose(delta, [-3.0 / (3.0 + 1.0)], rtol=1e-15)


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
    spec = O.OPTIMIZERS[name]
    opt = spec.factory(**{k: 0.0 for k in spec.params})
    g = np.array([1.0, -2.0, 3.0])
    state = opt.init(np.zeros(3))
    if opt.begin_epoch is not None:
        state = opt.begin_epoch(g[np.newaxis], state)
    before = g.copy()
    opt.update(g, state, 0.1)
    np.testing.assert_array_equal(g, before)
