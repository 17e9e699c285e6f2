"""Per-step cost of the harness against hand-written numpy loops, measured in the same run.

    python benchmarks/step_cost.py [--steps 100000] [--repeats 7]

For each optimizer the harness runs ``steps`` steps on the default problem with a rate small
enough (or a constant sign step) that it cannot converge early, so every run takes exactly
``steps`` steps; the baseline is a plain numpy loop doing the same arithmetic and nothing
else (no schedule, no convergence test, no recording), with the same constants precomputed.
Both start from the same point and must end at the same θ (checked), so the ratio compares
equal work. For GD a second line compares against the fewest-calls loop, which folds the
rate into the matrix (only possible for a constant step): the floor, not the goal. Reported: the
fastest of ``repeats`` interleaved timings (noise on a shared machine only ever adds time), in
ns per step, and harness / baseline. Read the ratio, not the absolute times.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from implicit_bias.optimizers import adam, epoch_rms_adam, sgd, sign_sgd
from implicit_bias.problems import single_equation
from implicit_bias.runner import RunSettings, run
from implicit_bias.schedules import constant

PROBLEM = single_equation(np.array([1.0, 0.1, 0.01]), 1.0, None)


def hand_gd(steps: int, lr: float) -> np.ndarray:
    """The same arithmetic as the harness, constants folded the same way: 5 numpy calls a step."""
    A, b, theta = PROBLEM.A, PROBLEM.b, PROBLEM.theta0.copy()
    grad_matrix = A.T * (-2.0 / A.shape[0])
    for _ in range(steps):
        g = grad_matrix @ (b - A @ theta)
        theta = theta - lr * g
    return theta


def fewest_calls_gd(steps: int, lr: float) -> np.ndarray:
    """GD in 3 numpy calls a step, lr folded into the matrix (possible only for a constant step)."""
    A, b, theta = PROBLEM.A, PROBLEM.b, PROBLEM.theta0.copy()
    step_matrix = A.T * (2.0 * lr / A.shape[0])
    for _ in range(steps):
        theta = theta + step_matrix @ (b - A @ theta)
    return theta


def hand_sign(steps: int, lr: float) -> np.ndarray:
    A, b, theta = PROBLEM.A, PROBLEM.b, PROBLEM.theta0.copy()
    grad_matrix = A.T * (-2.0 / A.shape[0])
    for _ in range(steps):
        g = grad_matrix @ (b - A @ theta)
        theta = theta - lr * np.sign(g)
    return theta


def hand_epoch_rms(steps: int, lr: float) -> np.ndarray:
    A, b, theta = PROBLEM.A, PROBLEM.b, PROBLEM.theta0.copy()
    grad_matrix = A.T * (-2.0 / A.shape[0])
    sample_matrix = A * -2.0
    for _ in range(steps):
        r = b - A @ theta
        g = grad_matrix @ r
        per_sample = r[:, None] * sample_matrix
        root = np.sqrt(np.mean(per_sample * per_sample, axis=0))
        scale = np.zeros_like(root)
        np.divide(1.0, root, out=scale, where=root > 0)
        theta = theta - lr * (g * scale)
    return theta


def hand_adam(steps: int, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> np.ndarray:
    A, b, theta = PROBLEM.A, PROBLEM.b, PROBLEM.theta0.copy()
    grad_matrix = A.T * (-2.0 / A.shape[0])
    m, v = np.zeros(3), np.zeros(3)
    for t in range(1, steps + 1):
        g = grad_matrix @ (b - A @ theta)
        power1, power2 = b1 ** t, b2 ** t  # β^t as a power of the step count, as the harness does
        m = m * b1 + g * (1 - b1)
        v = v * b2 + g * g * (1 - b2)
        denominator = np.sqrt(v / (1 - power2)) + eps
        step = np.zeros_like(m)
        np.divide(m / (1 - power1), denominator, out=step, where=denominator > 0)
        theta = theta + step * -lr
    return theta


CASES = {
    # name: (optimizer, rate, hand loop). GD at lr=1e-7 needs ~10^8 steps to converge;
    # sign methods with a constant step never do.
    "sgd": (sgd(), 1e-7, hand_gd),
    "sgd (vs fewest calls)": (sgd(), 1e-7, fewest_calls_gd),
    "sign_sgd": (sign_sgd(), 1e-3, hand_sign),
    "epoch_rms_adam": (epoch_rms_adam(0.0, "current"), 1e-3, hand_epoch_rms),
    "adam": (adam(0.9, 0.999, 1e-8, True, "outside"), 1e-6, hand_adam),  # travels 0.1 of 0.9
}


def harness(optimizer, lr: float, steps: int) -> np.ndarray:
    result = run(PROBLEM, optimizer, constant(lr), RunSettings(max_steps=steps))
    assert result.steps == steps and result.status == "max_steps", result.message
    return result.theta


def timed(fn, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"default problem [1, 0.1, 0.01]·θ = 1, {args.steps} steps, fastest of {args.repeats}")
    print(f"{'optimizer':22s} {'hand ns/step':>13s} {'harness ns/step':>16s} {'ratio':>7s}")
    for name, (optimizer, lr, hand) in CASES.items():
        hand_times, harness_times = [], []
        for _ in range(args.repeats):  # interleaved so drifts in machine speed hit both
            seconds, expected = timed(hand, args.steps, lr)
            hand_times.append(seconds)
            seconds, got = timed(harness, optimizer, lr, args.steps)
            harness_times.append(seconds)
            if not np.allclose(got, expected, rtol=1e-12, atol=1e-15):
                raise SystemExit(f"{name}: harness and hand loop disagree: {got} vs {expected}")
        h = min(hand_times) / args.steps * 1e9
        k = min(harness_times) / args.steps * 1e9
        print(f"{name:22s} {h:13.0f} {k:16.0f} {k / h:6.2f}x")


if __name__ == "__main__":
    main()
