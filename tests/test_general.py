"""Several equations: datasets, stochastic epochs, general predictions (docs/theory.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from implicit_bias.optimizers import EmptyState, Optimizer, epoch_rms_adam, preconditioned, rescaled_sgd, sgd, sign_sgd
from implicit_bias.params import ConfigError
from implicit_bias.predictions import judge, predict
from implicit_bias.problems import Problem, feature_scale, from_file, two_equations, wilson2017
from implicit_bias.references import interpolants
from implicit_bias.runner import RunSettings, run
from implicit_bias.schedules import constant, exponential
from conftest import build_config


@st.composite
def consistent_systems(draw, decades=2.0):
    """n < d ≤ 30, Gaussian features with column scales spread over ``decades``, b = Aθ*, any θ0."""
    d = draw(st.integers(2, 30))
    n = draw(st.integers(1, d - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = rng.standard_normal((n, d)) * 10 ** rng.uniform(-decades / 2, decades / 2, d)
    theta0 = rng.standard_normal(d) * draw(st.sampled_from([0.0, 1.0]))
    return Problem(A, A @ rng.standard_normal(d), theta0)


def gd_limit(p: Problem) -> np.ndarray:
    return p.theta0 + np.linalg.pinv(p.A) @ (p.b - p.A @ p.theta0)


def close(x, y, rel):
    return np.max(np.abs(x - y)) <= rel * max(1.0, float(np.max(np.abs(y))))


@settings(max_examples=30, deadline=None)
@given(consistent_systems(decades=1.0), st.sampled_from([None, 1]))
def test_gd_and_per_sample_sgd_reach_the_pinv_formula(p, batch_size):
    # GD contracts by about 1 − 2/cond(A)² per step: with cond < 50 the 400 000-step budget
    # covers the ~27·cond²/2 steps a 1e-12 test needs, so a draw that fails is a real failure
    assume(np.linalg.cond(p.A) < 50)
    n = p.A.shape[0]
    if batch_size is None:  # full batch: stable for lr < n / σ_max²
        lr = 0.9 * n / np.linalg.norm(p.A, 2) ** 2
    else:  # one sample at a time: stable for lr < 1 / max ‖a_j‖²
        lr = 0.9 / np.max(np.sum(p.A**2, axis=1))
    result = run(p, sgd(), constant(lr), RunSettings(max_steps=400_000, batch_size=batch_size))
    assert result.status == "converged", result.message
    assert close(result.theta, gd_limit(p), 1e-8)
    assert close(predict("sgd", {}, p, batch_size).point, gd_limit(p), 1e-12) or n == 1


@settings(max_examples=30, deadline=None)
@given(consistent_systems())
def test_literal_rescaled_sgd_is_preconditioned_gd_with_p_equal_s_squared(p):
    s = feature_scale(p.A)
    assume(np.linalg.cond(p.A * s) < 50)  # the same budget argument as above
    lr = 0.9 * p.A.shape[0] / np.linalg.norm(p.A * s, 2) ** 2
    literal = run(p, rescaled_sgd(), constant(lr), RunSettings(max_steps=400_000))
    weighted = run(p, preconditioned(s**2), constant(lr), RunSettings(max_steps=400_000))
    assert literal.status == weighted.status == "converged"
    assert close(literal.theta, weighted.theta, 1e-8)
    # the same iterates, not only the same limit
    assert close(literal.trajectory.theta[:20], weighted.trajectory.theta[:20], 1e-10)
    expected = predict("rescaled_sgd", {}, p).point
    assert close(literal.theta, expected, 1e-8)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20).flatmap(lambda d: st.tuples(
    # no values so small that scaling (sign) or squaring (epoch-RMS Adam) them underflows
    st.lists(st.floats(-1e3, 1e3, allow_nan=False).filter(lambda x: x == 0 or abs(x) > 1e-150), min_size=d, max_size=d),
    st.lists(st.floats(1e-3, 1e3), min_size=d, max_size=d))))
def test_sign_descent_is_unchanged_by_positive_diagonal_rescaling_of_the_gradient(pair):
    g, scale = np.array(pair[0])[:, None], np.array(pair[1])[:, None]  # columns; one sample
    for opt in (sign_sgd(), epoch_rms_adam(0.0, "current")):
        state = opt.init(np.zeros_like(g))
        plain_state = opt.begin_epoch(g, state) if opt.begin_epoch else state
        scaled_state = opt.begin_epoch(g * scale, state) if opt.begin_epoch else state
        plain, _ = opt.update(g, plain_state, 0.1)
        scaled, _ = opt.update(g * scale, scaled_state, 0.1)
        np.testing.assert_allclose(plain, scaled, rtol=1e-12, atol=0)


def test_on_two_equations_sign_sgd_ends_away_from_the_min_linf_interpolant():
    from implicit_bias.app import execute

    experiment = build_config(["dataset=two_equations", "optimizer=sign_sgd", "figure=false"])
    import tempfile, pathlib

    with tempfile.TemporaryDirectory() as tmp:
        record = execute(experiment, pathlib.Path(tmp), [])
    assert record["status"] == "converged"
    assert record["prediction"] is None and "Wilson's condition fails" in record["no_prediction_reason"]
    away = record["references"]["min_linf"]["distance"]
    assert away > 1e-3  # measurably: 2e-3, against a convergence accuracy of ~1e-12
    A = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    np.testing.assert_allclose(A @ np.array(record["limit"]), [1.0, 1.0], atol=1e-11)


@pytest.mark.parametrize("optimizer", ["sign_sgd", "adam optimizer.eps=0", "adagrad optimizer.eps=0", "rmsprop optimizer.eps=0"])
def test_on_wilson2017_adaptive_methods_reach_sign_of_atb_over_c(optimizer):
    name, *rest = optimizer.split()
    experiment = build_config(["dataset=wilson2017", f"optimizer={name}", *rest])
    p = experiment.problem
    direction = np.sign(p.A.T @ p.b)
    np.testing.assert_allclose(p.A @ direction, 4 * p.b)  # the construction's condition, c = 4
    result = run(p, experiment.optimizer.built, experiment.schedule.built, experiment.settings)
    prediction = predict(name, experiment.optimizer.params, p)
    assert result.status == "converged"
    assert close(result.theta, direction / 4, 1e-10)
    assert judge(p, prediction, result.theta, result.status, steps=result.steps, grad_norm=result.grad_norm).verdict == "match"
    # and this is the min-ℓ∞ interpolant, far from GD's min-ℓ2 one
    refs = interpolants(p)
    assert close(result.theta, refs["min_linf"], 1e-6) and not close(result.theta, refs["min_l2"], 1e-2)


def test_epoch_rms_adam_with_several_samples_has_no_closed_form():
    p = wilson2017(6, 0.67, 0)
    prediction = predict("epoch_rms_adam", {"eps": 0.0}, p)
    assert prediction.point is None and "Baek" in prediction.source


def test_inconsistent_system_gd_goes_to_the_least_squares_point_nearest_theta0():
    A = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    p = Problem(A, np.array([1.0, 2.0, 0.5]), np.array([0.3, -0.2, 0.7]))
    result = run(p, sgd(), constant(0.1), RunSettings())
    assert result.status == "converged"
    assert close(result.theta, predict("sgd", {}, p).point, 1e-10)
    assert predict("sgd", {}, p, batch_size=1).point is None  # stochastic steps never settle there
    assert interpolants(p) == {}


# ---------------------------------------------------------------- epochs


def recording_optimizer(seen):
    def observe(sample_grads, state):
        seen.append(sample_grads.shape[-1])  # one column per sample
        return state

    return Optimizer(lambda theta0: EmptyState(), lambda g, s, lr: (g * -lr, s), observe=observe)


def test_an_epoch_visits_every_sample_once_in_batches():
    p = Problem(np.eye(5, 8), np.ones(5), np.zeros(8))
    seen = []
    run(p, recording_optimizer(seen), constant(1e-9), RunSettings(max_steps=9, batch_size=2))
    assert seen == [2, 2, 1] * 3


def test_batch_size_n_is_full_batch_and_shuffling_is_seeded():
    p = wilson2017(6, 0.67, 0)
    full = run(p, sgd(), constant(0.05), RunSettings(max_steps=50))
    as_n = run(p, sgd(), constant(0.05), RunSettings(max_steps=50, batch_size=6))
    np.testing.assert_array_equal(full.theta, as_n.theta)
    a = run(p, sgd(), constant(0.05), RunSettings(max_steps=50, batch_size=2, seed=3))
    b = run(p, sgd(), constant(0.05), RunSettings(max_steps=50, batch_size=2, seed=3))
    c = run(p, sgd(), constant(0.05), RunSettings(max_steps=50, batch_size=2, seed=4))
    np.testing.assert_array_equal(a.theta, b.theta)
    assert not np.array_equal(a.theta, c.theta)


def test_epoch_rms_adam_previous_uses_the_last_epochs_gradients():
    opt = epoch_rms_adam(0.0, "previous")  # sample gradients are columns
    state = opt.begin_epoch(np.array([[2.0], [1.0]]), opt.init(np.zeros((2, 1))))  # first epoch: current
    np.testing.assert_allclose(state.scale, [[0.5], [1.0]])
    state = opt.observe(np.array([[4.0, 0.0], [1.0, 1.0]]), state)
    state = opt.begin_epoch(np.array([[100.0], [100.0]]), state)  # ignored: the previous epoch counts
    np.testing.assert_allclose(state.scale, [[1 / np.sqrt(8.0)], [1.0]])


# ---------------------------------------------------------------- files


def test_from_file_reads_npz_and_csv(tmp_path):
    np.savez(tmp_path / "s.npz", A=[[1.0, 2.0], [3.0, 4.0]], b=[1.0, 2.0], theta0=[0.5, 0.5])
    p = from_file(str(tmp_path / "s.npz"), None)
    np.testing.assert_array_equal(p.theta0, [0.5, 0.5])
    (tmp_path / "s.csv").write_text("1, 2, 1\n3, 4, 2\n")
    q = from_file(str(tmp_path / "s.csv"), None)
    np.testing.assert_array_equal(q.A, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(q.b, [1, 2])


@pytest.mark.parametrize("name, content, message", [
    ("missing.npz", None, "existing file"),
    ("keys.npz", {"X": [[1.0]], "b": [1.0]}, "must contain arrays 'A' and 'b'"),
    ("shape.npz", {"A": [[1.0, 2.0]], "b": [1.0, 2.0]}, "one entry per row"),
    ("nan.npz", {"A": [[1.0, np.nan]], "b": [1.0]}, "finite"),
    ("theta.npz", {"A": [[1.0, 2.0]], "b": [1.0], "theta0": [1.0]}, "'theta0'"),
    ("cells.csv", "1, 2, x\n", "numbers only. Got 'x'"),
    ("ragged.csv", "1, 2, 3\n1, 2\n", "same number"),
    ("inf.csv", "1, inf, 3\n", "finite"),
    ("data.txt", "1, 2\n", "must end in .npz or .csv"),
])
def test_from_file_errors_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        from_file(str(path), None)


def test_two_equations_default_dataset_is_as_documented():
    p = two_equations(None)
    np.testing.assert_array_equal(p.A, [[1, 2, 0], [0, 1, 3]])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ill_conditioned_systems_get_the_tolerance_their_stopping_rule_guarantees(seed, tmp_path):
    from implicit_bias.app import execute

    experiment = build_config(["dataset=gaussian", "dataset.n=23", "dataset.d=24", f"dataset.seed={seed}",
                               "max_steps=300000", "figure=false"])
    record = execute(experiment, tmp_path, [])
    assert record["status"] == "converged" and record["verdict"] == "match"
    assert 20 < record["condition_number"] < 60
    assert record["verdict_tol_used"] == pytest.approx(4e-12 * record["condition_number"] ** 2)


def test_wilsons_condition_check_does_not_depend_on_the_scale_of_a():
    p = two_equations(None)
    small = Problem(p.A * 1e-12, p.b, p.theta0)
    assert predict("sign_sgd", {}, p).point is None
    assert predict("sign_sgd", {}, small).point is None


def test_rank_one_systems_with_several_rows_use_the_one_equation_theory():
    A = np.array([[1.0, 0.1, 0.01], [2.0, 0.2, 0.02]])
    p = Problem(A, np.array([1.0, 2.0]), np.zeros(3))
    np.testing.assert_allclose(predict("steepest", {"norm": "l1"}, p).point, [1.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(predict("sign_sgd", {}, p).point, np.full(3, 1 / 1.11), rtol=1e-14)
    inconsistent = Problem(np.ones((2, 2)), np.array([1.0, 2.0]), np.zeros(2))  # least squares: θ1 + θ2 = 1.5
    np.testing.assert_allclose(predict("sign_sgd", {}, inconsistent).point, [0.75, 0.75], rtol=1e-14)
    result = run(inconsistent, sign_sgd(), exponential(0.1, 0.95), RunSettings())
    assert result.status == "converged" and close(result.theta, np.array([0.75, 0.75]), 1e-10)


def test_a_consistent_full_column_rank_system_predicts_its_only_solution_for_any_optimizer():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((8, 3))
    p = Problem(A, A @ np.array([1.0, -2.0, 0.5]), np.zeros(3))
    for name in ("adam", "sign_sgd", "epoch_rms_adam", "steepest"):
        np.testing.assert_allclose(predict(name, {"eps": 0.0, "norm": "lp", "p": 3.0}, p).point, [1.0, -2.0, 0.5])


def test_more_file_errors(tmp_path):
    (tmp_path / "latin.csv").write_bytes(b"1, 2, \xff\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        from_file(str(tmp_path / "latin.csv"), None)
    np.savez(tmp_path / "complex.npz", A=np.array([[1 + 2j, 1.0]]), b=[1.0])
    with pytest.raises(ConfigError, match="real numbers"):
        from_file(str(tmp_path / "complex.npz"), None)
    (tmp_path / "fake.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match="not a readable NumPy .npz"):
        from_file(str(tmp_path / "fake.npz"), None)
    np.savez(tmp_path / "keys.npz", X=[[1.0]])
    with pytest.raises(ConfigError) as info:
        from_file(str(tmp_path / "keys.npz"), None)
    assert str(info.value).count("must contain") == 1
