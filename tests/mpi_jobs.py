"""Many data-parallel runs in one MPI launch, for the tests (a launch costs about a second).

    mpiexec -n K python tests/mpi_jobs.py CONFIG.json OUT.json PATTERN:N [PATTERN:N ...]

For each job, the first ``processes(PATTERN, N)`` ranks of the launch form a communicator
and run :func:`implicit_bias.dataparallel.train` on it, exactly as a launch of that size
would (train takes any communicator); the other ranks wait, sleeping. Rank 0 writes the
list of records to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import mpi4py

mpi4py.rc.thread_level = "single"
from mpi4py import MPI  # noqa: E402

from implicit_bias.build import build  # noqa: E402
from implicit_bias.dataparallel import build_run_config, processes, train  # noqa: E402


def idle_wait(request) -> None:
    while not request.Test():
        time.sleep(1e-3)  # ranks outside the job leave the cores to it


def main() -> None:
    config_file, out_file, *jobs = sys.argv[1:]
    world = MPI.COMM_WORLD
    experiment = build(build_run_config(json.loads(Path(config_file).read_text())))
    records = []
    for job in jobs:
        pattern, workers = job.split(":")
        count = processes(pattern, int(workers))
        if count > world.Get_size():
            raise SystemExit(f"{job} needs {count} processes; the launch has {world.Get_size()}")
        idle_wait(world.Ibarrier())
        team = world.Split(0 if world.Get_rank() < count else MPI.UNDEFINED, world.Get_rank())
        if team != MPI.COMM_NULL:
            record = train(team, experiment, pattern, "yield")
            team.Free()
            if record is not None:
                records.append(record)
    if world.Get_rank() == 0:
        Path(out_file).write_text(json.dumps(records))


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
