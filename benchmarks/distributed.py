"""Per-step wall time of data-parallel runs over MPI, against MPI's own Allreduce in the same run.

    python benchmarks/distributed.py [--workers 1,2,...,8] [--steps 500] [--repeats 3] [--figure PATH]

For every n and every pattern, one ``mpiexec`` launch of :mod:`implicit_bias.dataparallel`
(the study's :func:`~implicit_bias.studies.distributed.launch`) on the distributed
experiment's problem (N = 16 samples, p = 840), with a rate so small (1e-9) that no run stops
early: every run takes exactly ``steps`` steps. Reported per step, from inside the run (no
start-up): the wall time of a step, the part spent in the gradient synchronization, and the
messages and payload the harness counted. The baseline is MPI's ``Allreduce`` at the same n,
launched interleaved with the patterns in the same run; ratios > 1 are slower than it. Each
time is the fastest of ``repeats`` interleaved launches (noise only adds time).

The machine's core count matters: with more processes than cores (here up to 9 on 2), a
process waiting for a message gives its core up (``wait: auto`` chooses ``yield``), and the
step time is set by how often the scheduler runs each process, not by bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from implicit_bias.dataparallel import PATTERNS, build_run_config, formula
from implicit_bias.studies import distributed as study


def compose(overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(version_base="1.3", config_module="implicit_bias.conf"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return build_run_config(OmegaConf.to_container(cfg, resolve=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--figure", help="also draw µs per step against n into this PNG")
    args = parser.parse_args()
    try:
        mpiexec, library = study.find_mpi()
    except study.MPIUnavailable as err:
        print(f"distributed: skipped: {err}")
        return
    workers = [int(n) for n in args.workers.split(",")]
    config = compose(["experiment=distributed", "schedule.lr=1e-9", f"max_steps={args.steps}"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"distributed: {library}, {cores} cores, {platform.machine()}; N = {config['dataset']['n']}, "
          f"p = {config['dataset']['d']}, {args.steps} steps per run (sgd, lr 1e-9: none stops early), "
          f"fastest of {args.repeats} interleaved launches; baseline: MPI's Allreduce at the same n")
    best: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp, "config.json")
        config_file.write_text(json.dumps(config))
        for _ in range(args.repeats):
            for n in workers:
                for pattern in PATTERNS:
                    record, failure = study.launch(mpiexec, library, pattern, n, config_file, Path(tmp, "out.json"),
                                                   "auto", 600)
                    if record is None:
                        raise SystemExit(f"distributed: {pattern}, n = {n}: {failure}")
                    if record["steps"] != args.steps:
                        raise SystemExit(f"distributed: {pattern}, n = {n} stopped at step {record['steps']}")
                    key = (pattern, n)
                    if key not in best or record["step_time_s"] < best[key]["step_time_s"]:
                        best[key] = record
    header = "| n | pattern | messages/step | kB/step | µs/step | µs in sync/step | step ÷ Allreduce's | step ÷ n = 1 |"
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for n in workers:
        for pattern in PATTERNS:
            r = best[(pattern, n)]
            base, first = best[("allreduce", n)], best[(pattern, workers[0])]
            messages, payload = formula(pattern, n, r["parameters"])
            if pattern != "allreduce" and (r["messages_per_step"], r["bytes_per_step"]) != (messages, payload):
                raise SystemExit(f"distributed: {pattern}, n = {n}: counts differ from the formula")
            counted = "—" if r["messages_per_step"] is None else str(r["messages_per_step"])
            volume = "—" if r["bytes_per_step"] is None else f"{r['bytes_per_step'] / 1e3:.1f}"
            print(f"| {n} | {pattern} | {counted} | {volume} | {1e6 * r['step_time_s']:.0f} | "
                  f"{1e6 * r['sync_time_s']:.0f} | {r['step_time_s'] / base['step_time_s']:.2f}× | "
                  f"{r['step_time_s'] / first['step_time_s']:.1f}× |")
    if args.figure:
        draw(best, workers, library, cores, Path(args.figure))


def draw(best: dict, workers: list[int], library: str, cores: int, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.4), layout="constrained")
    time_ax, ratio_ax = fig.subplots(1, 2)
    for pattern in PATTERNS:
        color, marker = study.STYLE[pattern]
        step = np.array([best[(pattern, n)]["step_time_s"] for n in workers]) * 1e6
        sync = np.array([best[(pattern, n)]["sync_time_s"] for n in workers]) * 1e6
        base = np.array([best[("allreduce", n)]["step_time_s"] for n in workers]) * 1e6
        time_ax.plot(workers, step, marker + "-", color=color, label=f"{pattern}: step")
        time_ax.plot(workers, sync, marker + ":", color=color, mfc="none", label=f"{pattern}: in synchronization")
        ratio_ax.plot(workers, step / base, marker + "-", color=color, label=pattern)
    time_ax.set(xlabel="workers n", ylabel="µs per step (fastest launch)", yscale="log",
                title=f"wall time per step, {cores} cores\n(processes > cores from n = {cores + 1}; n = {cores} with the server)")
    ratio_ax.set(xlabel="workers n", ylabel="step time ÷ MPI Allreduce's at the same n", yscale="log",
                 title="against MPI's own Allreduce, same run (below 1: faster)")
    ratio_ax.axhline(1.0, color="k", lw=0.8)
    for ax in (time_ax, ratio_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Data-parallel step time over MPI ({library}), p = 840, N = 16", fontsize=10)
    fig.savefig(path, format="png", dpi=100)
    print(f"figure: {path}")


if __name__ == "__main__":
    sys.exit(main())
