"""Regression tests: where each optimizer ends up on the homework problem, run from its configs.

The expected limits are written out from the homework's closed forms, not taken from the
harness's prediction code, and the tolerance is the README's 1e-10 (max-abs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from implicit_bias.predictions import judge, predict
from implicit_bias.runner import run
from conftest import A_HOMEWORK, build_config

TOL = 1e-10

EXPECTED = {
    "sgd": A_HOMEWORK / 1.0101,  # a / ‖a‖², ‖a‖² = 1 + 0.01 + 0.0001
    "epoch_rms_adam": np.full(3, 1 / 1.11),  # sign(a) / ‖a‖₁
    "sign_sgd": np.full(3, 1 / 1.11),
    "rescaled_sgd": np.array([1 / 3, 10 / 3, 100 / 3]),
}


A = A_HOMEWORK
Q3 = 1.5  # dual exponent of p = 3
LP3 = np.abs(A) ** (Q3 - 1) / np.sum(np.abs(A) ** Q3)  # min-ℓ3 interpolant of aᵀθ = 1 (Hölder)

FAMILY = {  # every exact case: optimizer overrides and the limit written out from its theory
    "momentum": (["optimizer=momentum"], A / 1.0101),
    "momentum torch convention, decaying step": (["optimizer=momentum", "optimizer.convention=torch",
                                                  "schedule=inverse_sqrt"], A / 1.0101),
    "nesterov": (["optimizer=nesterov"], A / 1.0101),
    "steepest l2": (["optimizer=steepest"], A / 1.0101),
    "steepest linf": (["optimizer=steepest", "optimizer.norm=linf"], np.full(3, 1 / 1.11)),
    "steepest l1": (["optimizer=steepest", "optimizer.norm=l1"], np.array([1.0, 0.0, 0.0])),
    "steepest lp": (["optimizer=steepest", "optimizer.norm=lp", "optimizer.p=3"], LP3),
    "adam eps=0": (["optimizer=adam", "optimizer.eps=0"], np.full(3, 1 / 1.11)),
    "adam eps=0 inside, no bias correction": (
        ["optimizer=adam", "optimizer.eps=0", "optimizer.eps_placement=inside", "optimizer.bias_correction=false"],
        np.full(3, 1 / 1.11)),
    "adagrad eps=0": (["optimizer=adagrad", "optimizer.eps=0"], np.full(3, 1 / 1.11)),
    "rmsprop eps=0": (["optimizer=rmsprop", "optimizer.eps=0"], np.full(3, 1 / 1.11)),
}


def run_config(overrides):
    experiment = build_config(overrides)
    result = run(experiment.problem, experiment.optimizer.built, experiment.schedule.built, experiment.settings)
    return experiment, result


@pytest.mark.parametrize("optimizer", sorted(EXPECTED))
def test_default_config_converges_to_the_homework_limit(optimizer):
    experiment, result = run_config([f"optimizer={optimizer}"])
    assert result.status == "converged", result.message
    assert np.max(np.abs(result.theta - EXPECTED[optimizer])) <= TOL
    prediction = predict(optimizer, experiment.optimizer.params, experiment.problem)
    assert judge(experiment.problem, prediction, result.theta, result.status, steps=result.steps,
                  grad_norm=result.grad_norm, verdict_tol=TOL).verdict == "match"


def test_sgd_limit_uses_the_full_squared_norm():
    # a/‖a‖² = [0.990000990…, …]; the value 0.990099… often quoted for it is 1/1.01, which
    # drops the 0.01² term. A limit that close to 0.990099 would be a wrong answer.
    _, result = run_config(["optimizer=sgd"])
    assert abs(result.theta[0] - 0.990000990001) < 1e-11
    assert abs(result.theta[0] - 1 / 1.01) > 9e-5


@pytest.mark.parametrize("lr", [0.01, 0.3, 0.9])
def test_sgd_limit_does_not_depend_on_a_convergent_lr(lr):
    _, result = run_config(["optimizer=sgd", f"schedule.lr={lr}"])
    assert result.status == "converged", result.message
    assert np.max(np.abs(result.theta - EXPECTED["sgd"])) <= TOL


@pytest.mark.parametrize("schedule", ["exponential", "step"])
def test_sign_sgd_converges_under_decaying_schedules(schedule):
    _, result = run_config(["optimizer=sign_sgd", f"schedule={schedule}"])
    assert result.status == "converged", result.message
    assert np.max(np.abs(result.theta - EXPECTED["sign_sgd"])) <= TOL


def test_constant_step_sign_sgd_is_reported_not_converged():
    experiment, result = run_config(["optimizer=sign_sgd", "schedule=constant", "schedule.lr=0.01", "max_steps=5000"])
    assert result.status == "max_steps"
    assert "still moving" in result.message
    assert result.step_norm == pytest.approx(0.01 * np.sqrt(3))  # every step is α·(±1, ±1, ±1): it never settles
    prediction = predict("sign_sgd", {}, experiment.problem)
    comparison = judge(experiment.problem, prediction, result.theta, result.status, steps=result.steps,
                  grad_norm=result.grad_norm, verdict_tol=TOL)
    assert comparison.verdict == "not_converged"
    assert 1e-6 < comparison.error <= 0.01  # it hovers within one step of the limit


def test_too_large_a_step_diverges_and_a_huge_one_is_non_finite():
    _, diverged = run_config(["schedule.lr=2"])
    assert diverged.status == "diverged"
    _, blown = run_config(["schedule.lr=1e300"])
    assert blown.status == "non_finite"
    assert not np.all(np.isfinite(blown.theta))


def test_a_schedule_that_dies_too_early_is_reported_as_stalled():
    _, result = run_config(["optimizer=sgd", "schedule=exponential", "max_steps=3000"])
    assert result.status == "max_steps"
    assert "stalled" in result.message


def test_nonzero_start_converges_to_the_rank_one_formula():
    theta0 = np.array([0.5, -2.0, 3.0])
    overrides = ["optimizer=sgd", "dataset.theta0=[0.5,-2.0,3.0]"]
    experiment, result = run_config(overrides)
    a = A_HOMEWORK
    expected = theta0 + a * (1.0 - a @ theta0) / (a @ a)
    assert result.status == "converged"
    assert np.max(np.abs(result.theta - expected)) <= TOL
    # not the minimum-norm solution: GD keeps the part of θ0 orthogonal to a
    assert np.max(np.abs(result.theta - EXPECTED["sgd"])) > 1.0


@pytest.mark.parametrize("b", [1e-7, 1e7])
def test_the_verdict_is_relative_to_the_size_of_the_solution(b):
    experiment, result = run_config(["optimizer=rescaled_sgd", f"dataset.b={b}"])
    prediction = predict("rescaled_sgd", {}, experiment.problem)
    comparison = judge(experiment.problem, prediction, result.theta, result.status, steps=result.steps,
                  grad_norm=result.grad_norm, verdict_tol=TOL)
    assert result.status == "converged" and comparison.verdict == "match"
    assert comparison.relative_error <= TOL
    np.testing.assert_allclose(result.theta, b * EXPECTED["rescaled_sgd"], rtol=1e-10)


@pytest.mark.parametrize("case", sorted(FAMILY))
def test_family_converges_to_its_exact_limit(case):
    overrides, expected = FAMILY[case]
    experiment, result = run_config(overrides)
    assert result.status == "converged", result.message
    assert np.max(np.abs(result.theta - expected)) <= TOL
    prediction = predict(experiment.optimizer.name, experiment.optimizer.params, experiment.problem)
    assert prediction.exact
    assert judge(experiment.problem, prediction, result.theta, result.status, steps=result.steps,
                  grad_norm=result.grad_norm, verdict_tol=TOL).verdict == "match"


@pytest.mark.parametrize("optimizer", ["adam", "adagrad", "rmsprop", "epoch_rms_adam"])
def test_with_eps_the_sign_prediction_is_approximate_and_the_drift_is_measured(optimizer):
    experiment, result = run_config([f"optimizer={optimizer}", "optimizer.eps=1e-4"])
    assert result.status == "converged", result.message
    prediction = predict(optimizer, experiment.optimizer.params, experiment.problem)
    comparison = judge(experiment.problem, prediction, result.theta, result.status, steps=result.steps,
                  grad_norm=result.grad_norm, verdict_tol=TOL)
    assert not prediction.exact and comparison.verdict == "approximate"
    assert abs(A @ result.theta - 1.0) < 1e-11  # still a solution, just not the sign-line one
    assert comparison.error > 0


def test_linf_steepest_converges_with_a_constant_step_where_sign_sgd_cannot():
    _, scaled = run_config(["optimizer=steepest", "optimizer.norm=linf", "schedule=constant", "schedule.lr=0.1"])
    _, plain = run_config(["optimizer=sign_sgd", "schedule=constant", "schedule.lr=0.1", "max_steps=20000"])
    assert scaled.status == "converged" and np.max(np.abs(scaled.theta - np.full(3, 1 / 1.11))) <= TOL
    assert plain.status == "max_steps" and np.max(np.abs(plain.theta - np.full(3, 1 / 1.11))) > 1e-3


def test_l1_steepest_with_tied_entries_has_no_prediction():
    experiment, result = run_config(["optimizer=steepest", "optimizer.norm=l1", "dataset.a=[1,-1,0.5]"])
    prediction = predict("steepest", experiment.optimizer.params, experiment.problem)
    assert prediction.point is None and "tie" in prediction.reason
    assert result.status == "converged"  # the run still ends somewhere, and is recorded


@pytest.mark.parametrize("optimizer", sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "optimizer").glob("*.yaml")))
def test_every_optimizer_config_converges_with_its_defaults(optimizer):
    experiment, result = run_config([f"optimizer={optimizer}"])
    assert result.status == "converged", result.message
    assert abs(A @ result.theta - 1.0) < 1e-11
    prediction = predict(optimizer, experiment.optimizer.params, experiment.problem)
    verdict = judge(experiment.problem, prediction, result.theta, result.status, steps=result.steps,
                  grad_norm=result.grad_norm, verdict_tol=TOL).verdict
    assert verdict == ("match" if prediction.exact else "approximate")
