"""The benchmark suite: every number is a ratio against a baseline measured in the same run.

    python benchmarks/suite.py [--quick] [--d 100000]

1. per-step cost of single runs on the homework problem, against hand numpy loops
   (benchmarks/step_cost.py);
2. batched runs: per run-step cost of 1000 members in one loop against a single run, and a
   1000-configuration Adam grid from the command line, batched against a plain multirun
   (benchmarks/batched.py);
3. start-up: ``implicit-bias figure=false`` wall time against a bare Hydra app that imports
   numpy (the floor any Hydra + numpy command pays);
4. large GD: per-step time on an n = 1000, d = 100 000 float64 system against the memory
   bound, reading A twice at the streaming bandwidth measured here;
5. data-parallel runs over MPI: per-step time of each synchronization pattern for n = 1…8
   workers against MPI's own Allreduce at the same n (benchmarks/distributed.py; skipped
   with a line when the mpi extra is not installed).

``--quick`` shortens every part (100-configuration grid). The machine is noisy: read the
ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FLOOR_APP = '''
import hydra, numpy
@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg):
    pass
main()
'''


def startup(repeats: int) -> None:
    """Both commands as a user runs them: bytecode caching on (a ``PYTHONDONTWRITEBYTECODE``
    in the environment would make every start recompile our sources, but not the installed
    packages'), after one warm-up run each; interleaved; the fastest of ``repeats``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "floor.py").write_text(FLOOR_APP)
        commands = {  # a run directory is used once (a second run into it is refused): one per attempt
            "floor": [sys.executable, "floor.py", f"hydra.run.dir={tmp}/floor{{attempt}}"],
            "ours": [sys.executable, "-m", "implicit_bias", "figure=false", f"hydra.run.dir={tmp}/run{{attempt}}"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for attempt in range(repeats + 1):
            for name, command in commands.items():
                command = [word.format(attempt=attempt) for word in command]
                start = time.perf_counter()
                subprocess.run(command, cwd=tmp, env=env, check=True, capture_output=True)
                if attempt:  # the first round writes the bytecode caches
                    times[name].append(time.perf_counter() - start)
    ours, floor = min(times["ours"]), min(times["floor"])
    print(f"start-up: implicit-bias figure=false {ours:.3f} s, bare Hydra + numpy app {floor:.3f} s: "
          f"ratio {ours / floor:.2f}x (fastest of {repeats}, interleaved)")


def large_gd(n: int, d: int, repeats: int) -> None:
    from implicit_bias.optimizers import sgd
    from implicit_bias.problems import Problem
    from implicit_bias.runner import RunSettings, run
    from implicit_bias.schedules import constant

    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, d))
    problem = Problem(A, A @ rng.standard_normal(d), np.zeros(d))
    # The memory floor: the fastest plain read of A's 0.8 GB measured here, whichever way
    # (a BLAS dot over its memory, A @ x, or x @ A: GEMV is itself a streaming read of A).
    flat, ones, x, y = A.reshape(-1), np.ones(A.size), np.ones(d), np.ones(n)
    reads = {"ddot": lambda: flat @ ones, "A @ x": lambda: A @ x, "y @ A": lambda: y @ A}
    best = {}
    for name, read in reads.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            read()
            times.append(time.perf_counter() - start)
        best[name] = min(times)  # the fastest: noise only ever adds time
    fastest = min(best, key=best.get)
    bandwidth = A.nbytes / best[fastest]
    bound = 2 * best[fastest]  # a GD step reads A for Aθ and again for Aᵀr
    del flat, ones

    # Per step, inside one run: the progress hook is called at every check (every 10 steps
    # here), so the time between two checks is ten steps, events included, without the setup.
    stamps: list[tuple[int, float]] = []
    settings = RunSettings(max_steps=10 * (repeats + 1), check_every=10, check_fraction=0.0)
    result = run(problem, sgd(), constant(1e-12), settings, progress=lambda t, *_: stamps.append((t, time.perf_counter())))
    assert result.steps == settings.max_steps
    per_step = min((t2 - t1) / (s2 - s1) for (s1, t1), (s2, t2) in zip(stamps, stamps[1:]))
    print(f"large GD (n = {n}, d = {d}, A = {A.nbytes / 1e9:.2f} GB): {1e3 * per_step:.1f} ms/step (fastest of "
          f"{len(stamps) - 1} ten-step stretches); fastest read of A ({fastest}) {bandwidth / 1e9:.1f} GB/s, "
          f"two reads {1e3 * bound:.1f} ms: ratio {per_step / bound:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--d", type=int, default=100_000, help="columns of the large system")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
    subprocess.run([sys.executable, str(HERE / "step_cost.py"), "--steps", "20000" if args.quick else "100000",
                    "--repeats", str(repeats)], check=True)
    subprocess.run([sys.executable, str(HERE / "batched.py"), "--steps", "2000" if args.quick else "10000",
                    "--repeats", "3", "--grid", "100" if args.quick else "1000"], check=True)
    startup(repeats)
    large_gd(1000, args.d, repeats)
    subprocess.run([sys.executable, str(HERE / "distributed.py"), "--workers", "1,2,4,8" if args.quick else "1,2,3,4,5,6,7,8",
                    "--steps", "300" if args.quick else "500", "--repeats", "1" if args.quick else "3"], check=True)


if __name__ == "__main__":
    main()
