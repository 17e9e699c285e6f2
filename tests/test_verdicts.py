"""Verdicts under attack: a ``match`` must be impossible for a run that did not get there, and
a theory that applies must not be missed (docs/theory.md §2.3–2.5, §5).

Each case is an ordinary input that once fooled the verdict or the stopping rule: a start far
out in the null space, tiny step sizes, near-ties within rounding, ill-conditioning, data at
the edges of float64, and systems where a known theory was reported as "no prediction".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_bias.optimizers import sgd, sign_sgd
from implicit_bias.predictions import judge, predict
from implicit_bias.problems import Problem, single_equation
from implicit_bias.runner import RunSettings, run
from implicit_bias.schedules import constant, exponential

from conftest import build_config, run_cli


def run_and_judge(overrides: list[str]):
    experiment = build_config(overrides)
    result = run(experiment.problem, experiment.optimizer.built, experiment.schedule.built, experiment.settings)
    prediction = predict(experiment.optimizer.name, experiment.optimizer.params, experiment.problem,
                         experiment.settings.batch_size)
    comparison = judge(experiment.problem, prediction, result.theta, result.status, steps=result.steps,
                       grad_norm=result.grad_norm, verdict_tol=experiment.verdict_tol,
                       grad_tol=experiment.settings.grad_tol, batch_size=experiment.settings.batch_size)
    return experiment, result, prediction, comparison


# ---------------------------------------------------------------- no false "converged", no false "match"

NULL_SPACE_START = ["dataset.a=[1,0.5]", "dataset.b=1", "dataset.theta0=[1e12,-2e12]"]  # aᵀθ0 = 0


def test_a_run_that_never_moved_is_not_converged_and_not_a_match():
    """θ0 lies in the null space of a, 2e12 from the origin; lr = 1e-9 moves θ by 2e-9 per
    step, below θ's float64 resolution (4e-4): the iterate never changes. Once the stopping
    rule's scale grew with ‖θ0‖ and called this `converged` at step 10 and a `match`."""
    _, result, _, comparison = run_and_judge([*NULL_SPACE_START, "schedule.lr=1e-9", "max_steps=2000"])
    assert result.status == "max_steps"
    assert "lost to rounding" in result.message
    assert result.final_loss == pytest.approx(1.0)  # the loss never fell
    assert comparison.verdict == "not_converged"
    assert comparison.error == pytest.approx(0.8, rel=1e-3)  # 0.8 from the prediction, as it started


def test_the_same_start_with_a_working_step_converges_and_matches_within_float64_resolution():
    _, result, prediction, comparison = run_and_judge([*NULL_SPACE_START, "schedule.lr=0.3"])
    assert result.status == "converged", result.message
    assert comparison.verdict == "match", comparison
    tol = comparison.tolerance
    # the larger of the distance to travel (0.8) and the solution's size ‖b‖/‖a‖ = 0.894, not ‖θ0‖ = 2.2e12
    assert tol.scale == pytest.approx(max(0.8, 1 / np.sqrt(1.25)))
    assert tol.absolute < tol.separation / 2  # a match singles out GD's point
    # and independently: aᵀθ = 1 to float64's resolution at |θ| = 2e12
    assert abs(np.array([1.0, 0.5]) @ result.theta - 1.0) < 1e-2


def test_a_large_start_outside_the_null_space_travels_the_whole_way():
    _, result, prediction, comparison = run_and_judge(["dataset.a=[1,0.5]", "dataset.b=1",
                                                       "dataset.theta0=[1e12,1e12]", "schedule.lr=0.3"])
    assert result.status == "converged", result.message
    assert comparison.verdict == "match", comparison
    assert comparison.tolerance.scale == pytest.approx(np.max(np.abs(prediction.point - [1e12, 1e12])))


@pytest.mark.parametrize("lr", [1e-12, 1e-9, 1e-6])
def test_steps_too_small_to_arrive_are_never_converged(lr):
    _, result, _, comparison = run_and_judge([f"schedule.lr={lr}", "max_steps=3000"])
    assert result.status == "max_steps"
    assert comparison.verdict == "not_converged"


def test_a_start_on_the_solution_converges_at_once_and_matches():
    """θ0 already solves aᵀθ = b: every theory predicts θ0, the loss cannot fall, and the run is
    converged because its start is stationary."""
    _, result, prediction, comparison = run_and_judge(["dataset.a=[2,1]", "dataset.b=3", "dataset.theta0=[1,1]"])
    assert result.status == "converged"
    np.testing.assert_array_equal(prediction.point, [1.0, 1.0])
    assert comparison.verdict == "match" and comparison.error == 0.0


@given(scale=st.sampled_from([1e-60, 1e-20, 1.0, 1e20, 1e60]),
       null=st.floats(-1e12, 1e12, allow_nan=False),
       lr_fraction=st.sampled_from([1e-12, 1e-6, 0.01, 0.3, 0.9]))
@settings(max_examples=40, deadline=None)
def test_property_a_match_means_the_run_got_there(scale, null, lr_fraction):
    """GD on a·θ = b at any data scale, from θ0 = null·(null-space direction) of any size, with
    any rate from hopeless to fast: whenever the verdict says match, the limit is independently
    on the plane (to float64's resolution at |θ|) and much closer to GD's point than the start was."""
    a = np.array([1.0, 0.5]) * scale
    b = 1.0 * scale
    theta0 = null * np.array([0.5, -1.0]) / scale  # aᵀθ0 = 0
    problem = single_equation(a, b, theta0)
    lr = lr_fraction / float(a @ a)
    result = run(problem, sgd(), constant(lr), RunSettings(max_steps=3000))
    prediction = predict("sgd", {}, problem)
    comparison = judge(problem, prediction, result.theta, result.status, steps=result.steps,
                       grad_norm=result.grad_norm)
    travel = float(np.max(np.abs(prediction.point - theta0)))
    size = max(float(np.max(np.abs(theta0))), float(np.max(np.abs(prediction.point))))
    resolution = 1e4 * np.finfo(float).eps * size  # what float64 can tell apart at |θ| = size
    if comparison.verdict == "match":
        assert comparison.error <= max(1e-9 * travel, resolution)
        if travel > resolution:  # (below it θ0 and the prediction are the same float64 point)
            assert comparison.error < 0.01 * travel
    if lr_fraction <= 1e-6:  # 3000 steps of at most 3e-3 of the way: it cannot have arrived
        assert comparison.verdict != "match"
    if travel <= 4 * np.finfo(float).eps * size:  # the distance to travel is below θ0's ulps: unresolvable
        assert comparison.verdict in ("inconclusive", "not_converged")


def test_ill_conditioning_that_swamps_the_separation_is_inconclusive_not_a_match():
    """κ² · grad_tol large enough that the stopping rule guarantees less than the distance
    between GD's point and the nearest competing point: inconclusive, with the reason."""
    A = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1e-7]])  # nearly parallel rows: κ ≈ 3e7
    problem = Problem(A, np.array([1.0, 1.0]), np.zeros(3))
    prediction = predict("sgd", {}, problem)
    comparison = judge(problem, prediction, prediction.point, "converged", steps=1000, grad_norm=1e-13)
    assert comparison.verdict == "inconclusive"
    assert "guarantee the limit only to" in comparison.tolerance.reason


@pytest.mark.parametrize("optimizer", ["sgd", "sign_sgd"])
def test_theories_closer_together_than_the_guarantee_are_inconclusive(optimizer):
    """a = [1, 1 + 1e-10]: GD's point a/‖a‖² and the sign point sign(a)/‖a‖₁ are 2.5e-11 apart,
    below what a 1e-10 verdict tolerance can resolve: neither run may claim a match."""
    _, result, prediction, comparison = run_and_judge(["dataset.a=[1,1.0000000001]", f"optimizer={optimizer}"])
    assert result.status == "converged"
    assert comparison.verdict == "inconclusive"
    assert "could not tell them apart" in comparison.tolerance.reason
    assert comparison.tolerance.separation < 1e-10
    # one step further apart (1e-6), the same runs are conclusive matches
    assert run_and_judge(["dataset.a=[1,1.000001]", f"optimizer={optimizer}"])[3].verdict == "match"


def test_unknown_conditioning_is_inconclusive():
    problem = Problem(np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), np.array([1.0, 2.0]), np.zeros(3))
    prediction = predict("sgd", {}, problem)
    comparison = judge(problem, prediction, prediction.point, "converged", kappa=None)
    assert comparison.verdict == "inconclusive" and "κ(A) was not computed" in comparison.tolerance.reason


@pytest.mark.parametrize("magnitude", [1e-60, 1e60])
def test_the_verdict_means_the_same_at_any_data_scale(magnitude):
    base = run_and_judge(["optimizer=sign_sgd"])[3]
    scaled = run_and_judge(["optimizer=sign_sgd", f"dataset.a=[{magnitude},{0.1 * magnitude},{0.01 * magnitude}]",
                            f"dataset.b={magnitude}"])[3]
    assert base.verdict == scaled.verdict == "match"
    assert scaled.relative_error == pytest.approx(base.relative_error, rel=0.5, abs=1e-14)


# ---------------------------------------------------------------- the edges of float64

def test_data_whose_gradient_underflows_are_out_of_range_not_converged():
    """a ≈ 1e-200: every gradient term (1e-400) underflows to 0, so 0 ≤ 0 once passed the test."""
    _, result, _, comparison = run_and_judge(["optimizer=sign_sgd", "dataset.a=[1e-200,1e-201,1e-202]",
                                              "dataset.b=1e-200"])
    assert result.status == "out_of_range"
    assert "underflow" in result.message and result.steps == 0
    assert comparison.verdict == "not_converged"


def test_data_whose_squares_overflow_are_out_of_range():
    _, result, _, _ = run_and_judge(["dataset.a=[1e200,1e199,1e198]", "dataset.b=1e200"])
    assert result.status == "out_of_range" and "overflow" in result.message


def test_the_edges_of_the_supported_range_still_converge():
    for magnitude in (1e-70, 1e70):
        _, result, _, comparison = run_and_judge(["optimizer=sign_sgd", f"dataset.a=[{magnitude},{0.1 * magnitude}]",
                                                  f"dataset.b={magnitude}"])
        assert result.status == "converged", (magnitude, result.message)
        assert comparison.verdict == "match"


# ---------------------------------------------------------------- ties within rounding

def test_l1_ties_within_a_few_ulps_are_ties():
    _, result, prediction, comparison = run_and_judge(["dataset.a=[0.3,0.30000000000000004,0.1]",
                                                       "optimizer=steepest", "optimizer.norm=l1"])
    assert prediction.point is None
    assert "tie within rounding" in prediction.reason
    assert comparison.verdict == "no_prediction"


def test_a_clear_l1_winner_is_still_predicted():
    _, _, prediction, comparison = run_and_judge(["dataset.a=[0.3,0.3001,0.1]", "optimizer=steepest",
                                                  "optimizer.norm=l1"])
    np.testing.assert_allclose(prediction.point, [0.0, 1 / 0.3001, 0.0])
    assert comparison.verdict == "match"


def test_wilson_with_an_entry_of_atb_zero_within_rounding_has_no_prediction():
    A = np.array([[1.0, 0.1 + 0.2, 1.0], [1.0, -0.3, -1.0]])  # (Aᵀb)_2 = 0.30000000000000004 − 0.3
    problem = Problem(A, np.array([1.0, 1.0]), np.zeros(3))
    prediction = predict("sign_sgd", {}, problem)
    assert prediction.point is None and "zero within rounding" in prediction.reason


# ---------------------------------------------------------------- no missed theory

def test_an_inconsistent_full_column_rank_system_predicts_its_least_squares_point():
    _, result, prediction, comparison = run_and_judge(["dataset=linear_system", "dataset.A=[[1,0],[0,1],[1,1]]",
                                                       "dataset.b=[1,1,0]", "optimizer=sign_sgd"])
    np.testing.assert_allclose(prediction.point, [1 / 3, 1 / 3], rtol=1e-14)
    assert "least-squares point" in prediction.formula and "§2.3" in prediction.source
    assert result.status == "converged", result.message
    assert comparison.verdict == "match", comparison


@pytest.mark.parametrize("optimizer", ["sgd", "sign_sgd", "adam optimizer.eps=0", "steepest optimizer.norm=l1"])
def test_rank_one_data_with_minibatch_steps_keep_the_rank_one_rule(optimizer):
    """Rows k_j·a: every minibatch gradient is still a multiple of a."""
    name, *rest = optimizer.split()
    _, result, prediction, comparison = run_and_judge([
        "dataset=linear_system", "dataset.A=[[1,0.1,0.01],[2,0.2,0.02],[-0.5,-0.05,-0.005]]",
        "dataset.b=[1,2,-0.5]", "batch_size=1", f"optimizer={name}", *rest, "max_steps=200000"])
    assert prediction.point is not None, prediction.reason
    assert "rank-one" in prediction.formula
    assert result.status == "converged", result.message
    assert comparison.verdict == "match", comparison


def test_rank_one_within_rounding_only_gets_no_sign_prediction():
    A = np.array([[1.0, 0.0], [2.0, 1e-17]])  # numerically rank one, but the sign patterns differ
    problem = Problem(A, np.array([1.0, 2.0]), np.zeros(2))
    assert predict("sign_sgd", {}, problem).point is None
    assert predict("sgd", {}, problem).point is not None


def test_wilson_from_a_start_on_its_line():
    experiment = build_config(["dataset=wilson2017"])
    A, b = experiment.problem.A, experiment.problem.b
    u = np.sign(A.T @ b)
    for start in (0.05, -0.3):
        problem = Problem(A, b, start * u)
        prediction = predict("sign_sgd", {}, problem)
        np.testing.assert_allclose(prediction.point, u / 4, rtol=1e-14)
        result = run(problem, sign_sgd(), exponential(0.1, 0.95), RunSettings(max_steps=20_000))
        comparison = judge(problem, prediction, result.theta, result.status, steps=result.steps,
                           grad_norm=result.grad_norm)
        assert result.status == "converged" and comparison.verdict == "match", (start, comparison)
    off = Problem(A, b, 0.05 * u + 0.01 * np.eye(A.shape[1])[0])
    assert "off the line" in predict("sign_sgd", {}, off).reason


# ---------------------------------------------------------------- the command line says all of it

@pytest.mark.slow
def test_the_record_says_how_the_verdict_was_reached(tmp_path):
    done = run_cli([*NULL_SPACE_START, "schedule.lr=0.3", "figure=false", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["verdict"] == "match"
    assert record["verdict_scale"] == pytest.approx(1 / np.sqrt(1.25))
    assert record["verdict_tolerance"] < record["nearest_alternative"]["distance"] / 2
    assert record["verdict_reason"] is None


# ---------------------------------------------------------------- found by an adversarial review

def test_a_sign_run_knocked_off_wilsons_line_by_rounding_is_inconclusive_not_a_mismatch():
    """A·1 = 3b exactly, but (Aᵀb)_3 = 9e-13 relative to its terms: near the end the residual's
    last-bit noise flips sign(g_3) while the step is still large, and the run leaves the line
    the theory keeps it on. The theory did not fail; float64 decided: inconclusive, with why."""
    _, result, prediction, comparison = run_and_judge([
        "dataset=linear_system", "dataset.A=[[1,1,1],[1,2.9999999999990905,-0.9999999999990905]]",
        "dataset.b=[1,1]", "optimizer=sign_sgd"])
    assert prediction.point is not None and prediction.line is not None
    assert result.status == "converged"
    assert comparison.verdict == "inconclusive"
    assert "left the line" in comparison.tolerance.reason


def test_the_tolerance_covers_the_distance_the_accepted_gradient_allows():
    """Full column rank, κ = 100: a limit exactly (n/2)‖∇f‖/σ_min² from the solution along the
    weakest singular direction is what the stopping rule allows, so it must be a match."""
    from scipy.linalg import hadamard

    A = hadamard(8).astype(float)
    A[:, -1] /= 100
    solution = np.ones(8)
    problem = Problem(A, A @ solution, np.zeros(8))
    prediction = predict("sgd", {}, problem)
    _, sigma, vt = np.linalg.svd(A)
    step = 4.5e-8
    limit = solution + step * vt[-1]
    grad = 2 / 8 * A.T @ (A @ limit - problem.b)
    comparison = judge(problem, prediction, limit, "converged", steps=100, grad_norm=float(np.linalg.norm(grad)))
    assert comparison.error == pytest.approx(step * np.max(np.abs(vt[-1])), rel=1e-6)
    assert comparison.verdict == "match", comparison


def test_rows_whose_l1_argmax_differ_within_rounding_get_no_l1_prediction():
    u = 2.0 ** -52
    A = np.tile([1.0, 1.0 + 20 * u], (100, 1))
    A[-1] = [1.0 + 20 * u, 1.0]
    problem = Problem(A, np.ones(100), np.zeros(2))
    prediction = predict("steepest", {"norm": "l1", "p": 2.0, "squared": True}, problem, batch_size=1)
    assert prediction.point is None
    assert "tie within rounding" in prediction.reason  # 20 ulps apart, with 100 rows to round over
    from implicit_bias.predictions import _rows_share_one_largest_entry

    assert "different coordinates" in _rows_share_one_largest_entry(np.array([[1.0, 1.1], [-2.2, 2.0]]))
    assert _rows_share_one_largest_entry(np.array([[1.0, 1.1], [-2.0, 2.2]])) == ""


def test_an_lp_reference_within_solver_tolerance_does_not_block_a_full_rank_match():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 3))
    problem = Problem(A, A @ np.ones(3), np.zeros(3))
    prediction = predict("sgd", {}, problem)
    references = {"min_l1": np.ones(3) + 1e-13, "min_linf": np.ones(3) - 1e-13}  # as HiGHS returns them
    comparison = judge(problem, prediction, prediction.point, "converged", steps=50, grad_norm=1e-14,
                       references=references)
    assert comparison.verdict == "match", comparison


@pytest.mark.parametrize("a, b", [("[1e-10]", "1e155"), ("[1e100]", "1e-200")])
def test_a_loss_that_cannot_be_represented_is_out_of_range(a, b):
    _, result, _, _ = run_and_judge([f"dataset.a={a}", f"dataset.b={b}", "max_steps=100"])
    assert result.status == "out_of_range", result.message


def test_a_start_stationary_only_within_its_own_rounding_must_still_make_progress():
    """θ0 = ±2^40 along the null space of [1, 1], lr = 1e-20: nothing moves. The rounding
    floor at |θ| = 2^40 is large, but that is no evidence the start solves aᵀθ = 2^-8."""
    _, result, _, comparison = run_and_judge(["dataset.a=[1,1]", "dataset.b=0.00390625",
                                              "dataset.theta0=[1099511627776,-1099511627776]", "schedule.lr=1e-20",
                                              "max_steps=1000"])
    assert result.status == "max_steps"
    assert comparison.verdict == "not_converged"
