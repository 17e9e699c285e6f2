"""Batched runs against single runs, measured in the same run.

    python benchmarks/batched.py [--members 1000] [--steps 10000] [--repeats 3] [--grid 1000]

Per run-step cost: ``members`` Adam (and GD) runs on the default problem in one
:func:`~implicit_bias.runner.run_batch` loop, each with its own lr and ε, all with rates so
small that none stops early (every member takes every step: the loop's full cost, with no
help from early stopping), against :func:`~implicit_bias.runner.run` of one of them for
the same number of steps. Two members are checked to match their single runs bit for bit.
Reported: ns per run-step and single / batched (the speed-up).

Grid wall time: an Adam grid (lr × β1 × ε, ``grid`` configurations, every one converging)
through the command line, as a plain multirun and with ``hydra/sweeper=batched``; the two
``summary.csv`` files must agree in every column but ``wall_time_s``. Both pay Hydra's
per-job recording (``run_job``: the job directory, its ``.hydra/`` files and log); the
batched sweeper saves the per-job composition and the per-run numpy call overhead.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from implicit_bias.optimizers import adam, sgd
from implicit_bias.problems import single_equation
from implicit_bias.runner import RunSettings, run, run_batch
from implicit_bias.schedules import constant

PROBLEM = single_equation(np.array([1.0, 0.1, 0.01]), 1.0, None)

CASES = {
    # name: (factory of per-member hyperparameters → optimizer, base rate); rates small
    # enough that no member converges within the measured steps
    "sgd": (lambda eps: sgd(), 1e-7),
    "adam": (lambda eps: adam(0.9, 0.999, eps, True, "outside"), 1e-6),
}


def per_run_step(name: str, members: int, steps: int, repeats: int) -> None:
    factory, base = CASES[name]
    rates = base * (1.0 + np.arange(members) / members)
    eps = np.geomspace(1e-12, 1e-8, members)
    schedules = [constant(float(lr)) for lr in rates]
    settings = RunSettings(max_steps=steps)

    def batched():
        return run_batch(PROBLEM, lambda m: factory(eps[m][:, None, None]), schedules, settings)

    def single():
        return run(PROBLEM, factory(float(eps[-1])), schedules[-1], settings)

    batch_times, single_times = [], []
    for _ in range(repeats):  # interleaved so drifts in machine speed hit both
        start = time.perf_counter()
        results = batched()
        batch_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        alone = single()
        single_times.append(time.perf_counter() - start)
    assert all(r.steps == steps and r.status == "max_steps" for r in results)
    first = run(PROBLEM, factory(float(eps[0])), schedules[0], settings)
    if not (np.array_equal(results[0].theta, first.theta) and np.array_equal(results[-1].theta, alone.theta)):
        raise SystemExit(f"{name}: batch members differ from their single runs")
    b = min(batch_times) / (members * steps) * 1e9
    s = min(single_times) / steps * 1e9
    print(f"{name:6s} B = {members:5d}: single {s:8.0f} ns/step, batched {b:8.1f} ns/run-step: {s / b:6.1f}x")


def grid_axes(size: int) -> list[str]:
    """lr × β1 × ε overrides with ``size`` configurations (a cube, rounded)."""
    side = max(2, round(size ** (1 / 3)))
    lrs = ",".join(f"{v:.6g}" for v in np.linspace(0.1, 1.0, side))
    betas = ",".join(f"{v:.6g}" for v in np.linspace(0.0, 0.9, side))
    eps = ",".join(["0"] + [f"{v:.0e}" for v in np.geomspace(1e-16, 1e-8, side - 1)])
    return [f"schedule.lr={lrs}", f"optimizer.beta1={betas}", f"optimizer.eps={eps}"]


def summary_without_timing(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.pop("wall_time_s")
    return rows


def grid(size: int) -> None:
    axes = grid_axes(size)
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, extra in (("plain", []), ("batched", ["hydra/sweeper=batched"])):
            command = [sys.executable, "-m", "implicit_bias", "-m", "optimizer=adam", *axes, *extra, "figure=false",
                       "sweep_figures=false", f"hydra.sweep.dir={tmp}/{kind}"]
            start = time.perf_counter()
            subprocess.run(command, cwd=tmp, check=True, capture_output=True)
            walls[kind] = time.perf_counter() - start
        plain, batched = (summary_without_timing(Path(tmp, kind, "summary.csv")) for kind in ("plain", "batched"))
    jobs = len(plain)
    if plain != batched:
        raise SystemExit("grid: the batched summary.csv differs from the plain multirun's")
    converged = sum(row["status"] == "converged" for row in plain)
    print(f"adam grid of {jobs} configurations ({converged} converged), summaries identical but for wall_time_s: "
          f"plain multirun {walls['plain']:.1f} s, batched {walls['batched']:.1f} s: "
          f"{walls['plain'] / walls['batched']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid", type=int, default=1000, help="configurations in the command-line grid (0: skip)")
    args = parser.parse_args()
    print(f"default problem, {args.steps} steps, every member running to the end, fastest of {args.repeats}")
    for name in CASES:
        for members in sorted({100, args.members}):
            per_run_step(name, members, args.steps, args.repeats)
    if args.grid:
        grid(args.grid)


if __name__ == "__main__":
    main()
