"""Data-parallel runs over MPI (implicit_bias/dataparallel.py, implicit_bias/studies/distributed.py).

The MPI tests launch real ``mpiexec`` jobs (the mpich wheel of the test extra). To keep them
fast, most (pattern, n) runs share one launch (tests/mpi_jobs.py): the first k ranks of a
9-process launch form each run's communicator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, compose_config, run_cli
from implicit_bias.build import build
from implicit_bias.dataparallel import (
    COUNTED, build_run_config, chunk_bounds, compare, formula, ring_order_sum, single_process, single_process_steps,
)
from implicit_bias.params import ConfigError
from implicit_bias.studies import distributed as study

STUDY = ["experiment=distributed"]


def study_config(overrides: list[str] = ()) -> dict:
    return compose_config([*STUDY, *overrides])


# ----------------------------------------------------------------------------- no MPI needed


def test_ring_order_sum_is_the_ring_order_and_a_sum():
    rng = np.random.default_rng(0)
    for n, p in [(1, 5), (3, 12), (4, 10), (8, 840)]:
        x = rng.standard_normal((n, p)) * 10.0 ** rng.integers(-8, 8, size=(n, 1))
        bounds = chunk_bounds(p, n)
        got = ring_order_sum(x, bounds)
        for c in range(n):  # chunk c: ((x_{c+1} + x_{c+2}) + …) + x_c, written out
            lo, hi = bounds[c], bounds[c + 1]
            acc = x[(c + 1) % n, lo:hi]
            for k in range(2, n + 1):
                acc = acc + x[(c + k) % n, lo:hi]
            assert np.array_equal(got[lo:hi], acc)
        np.testing.assert_allclose(got, x.sum(axis=0), rtol=0, atol=1e-15 * n * np.abs(x).sum(axis=0).max())


def test_formulas():
    assert formula("all_to_all", 4, 840) == (12, 12 * 840 * 8)
    assert formula("parameter_server", 4, 840) == (8, 8 * 840 * 8)
    assert formula("ring_allreduce", 4, 840) == (24, 24 * 210 * 8)
    assert formula("allreduce", 4, 840) == (None, None)


@pytest.mark.parametrize("overrides, words", [
    (["distributed.workers=[0]"], ["'workers'", "ints in [1, inf)", "[0]"]),
    (["distributed.workers=[17]"], ["at most the number of samples N = 16", "n = 17"]),
    (["dataset.d=20", "distributed.workers=[3]"], ["'ring_allreduce'", "must divide", "p = 20", "n = 3"]),
    (["distributed.patterns=[ring]"], ["'patterns'", "all_to_all", "['ring']"]),
    (["optimizer=epoch_rms_adam"], ["'optimizer'", "sgd", "epoch_rms_adam", "Got 'epoch_rms_adam'"]),
    (["optimizer=rescaled_sgd"], ["'optimizer'", "rescaled_sgd need", "reparametrize"]),
    (["batch_size=4"], ["'batch_size'", "at least N = 16", "Got 4"]),
])
def test_bad_input_is_one_line_before_any_launch(tmp_path, overrides, words):
    with pytest.raises(ConfigError) as caught:
        study.run(study_config(overrides), tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert not (tmp_path / "runs").exists()  # nothing launched, nothing written


def test_ring_accepts_divisible_and_other_patterns_any_p(tmp_path, monkeypatch):
    """d = 20: n = 4 and 5 divide it; all_to_all and parameter_server take n = 3 too."""
    monkeypatch.setattr(study, "find_mpi", lambda: (_ for _ in ()).throw(study.MPIUnavailable("checked")))
    for overrides in (["distributed.workers=[4,5]"], ["distributed.workers=[3]", "distributed.patterns=[all_to_all,parameter_server]"]):
        with pytest.raises(study.MPIUnavailable, match="checked"):  # got past every check
            study.run(study_config(["dataset.d=20", *overrides]), tmp_path)


def test_missing_mpi4py_says_what_to_install(tmp_path, monkeypatch):
    real = study.importlib.util.find_spec
    monkeypatch.setattr(study.importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real(name, *a))
    with pytest.raises(ConfigError) as caught:
        study.run(study_config(), tmp_path)
    assert "\n" not in str(caught.value)
    assert "mpi4py is not installed" in str(caught.value) and 'pip install -e ".[mpi]"' in str(caught.value)


def test_mpi_that_cannot_start_says_so(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mpiexec"
    fake.write_text("#!/bin/sh\necho 'some launcher trouble' >&2\necho 'mpiexec: cannot connect to the process manager' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(study.sysconfig, "get_path", lambda name: str(bin_dir))
    with pytest.raises(ConfigError) as caught:
        study.run(study_config(), tmp_path / "out")
    message = str(caught.value)
    assert "\n" not in message
    assert "exited 3: mpiexec: cannot connect to the process manager" in message and "pip install" in message


# ----------------------------------------------------------------------------- MPI runs


def run_jobs(tmp_path: Path, overrides: list[str], jobs: list[str], processes: int = 9) -> tuple[dict, list[dict]]:
    """Launch tests/mpi_jobs.py once; return (the composed config, the records in job order)."""
    mpiexec, _ = study.find_mpi()
    config = build_run_config(study_config(overrides))
    config_file, out_file = tmp_path / "config.json", tmp_path / "records.json"
    config_file.write_text(json.dumps(config))
    env = dict(os.environ, **study.THREADS)
    done = subprocess.run([mpiexec, "-n", str(processes), sys.executable, str(ROOT / "tests" / "mpi_jobs.py"),
                           str(config_file), str(out_file), *jobs], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return config, json.loads(out_file.read_text())


def check_against_single_process(config: dict, records: list[dict]) -> None:
    experiment = build(config)
    reference = single_process(experiment)
    assert reference["status"] == "converged"
    by_n: dict[int, dict[str, dict]] = {}
    for record in records:
        by_n.setdefault(record["workers"], {})[record["pattern"]] = record
        assert record["ranks_identical"], record["pattern"]
        assert record["status"] == "converged", record["message"]
        same_step = single_process_steps(experiment, record["steps"])
        result = compare(record["limit"], record["steps"], reference, same_step, experiment)
        # the tolerance: both runs stop by a test that places them within
        # max(verdict_tol, 4·grad_tol·κ²) of the same exact limit (dataparallel.compare)
        assert result["matches_single_process"], (record["pattern"], record["workers"], result)
        if record["workers"] == 1:  # one worker does the runner's arithmetic
            assert result["bit_identical_same_step"], (record["pattern"], result)
        else:  # rounding alone, step for step: a few ulps of |θ| ≈ 0.4
            assert result["same_step_difference"] <= 1e-14, (record["pattern"], record["workers"], result)
    for n, patterns in by_n.items():  # one summation order: the same bits whatever the pattern
        limits = [np.asarray(patterns[p]["limit"]) for p in COUNTED if p in patterns]
        assert len(limits) >= 2
        for limit in limits[1:]:
            assert np.array_equal(limit, limits[0]), n
        steps = {patterns[p]["steps"] for p in COUNTED if p in patterns}
        assert len(steps) == 1


def test_counts_equal_the_formulas_for_n_1_to_8_and_sgd_matches_single_process(tmp_path):
    jobs = [f"{pattern}:{n}" for n in range(1, 9) for pattern in (*COUNTED, "allreduce")]
    config, records = run_jobs(tmp_path, [], jobs)
    assert [f"{r['pattern']}:{r['workers']}" for r in records] == jobs
    for record in records:
        n, p = record["workers"], record["parameters"]
        expected = {"all_to_all": (n * (n - 1), n * (n - 1) * p * 8),
                    "parameter_server": (2 * n, 2 * n * p * 8),
                    "ring_allreduce": (2 * n * (n - 1), 2 * n * (n - 1) * (p // n) * 8),
                    "allreduce": (None, None)}[record["pattern"]]
        assert (record["messages_per_step"], record["bytes_per_step"]) == expected, record["pattern"]
        if record["pattern"] in COUNTED:
            assert record["counts_constant_per_step"]
            assert record["messages_total"] == expected[0] * record["synchronizations"]
    check_against_single_process(config, records)


def test_adam_matches_single_process(tmp_path):
    jobs = [f"{pattern}:{n}" for n in (1, 3, 8) for pattern in COUNTED]
    config, records = run_jobs(tmp_path, ["optimizer=adam"], jobs)
    assert records[0]["steps"] > 100  # an adaptive run of some length, not a few steps
    check_against_single_process(config, records)


def test_by_hand_with_overrides(tmp_path):
    mpiexec, _ = study.find_mpi()
    done = subprocess.run([mpiexec, "-n", "3", sys.executable, "-m", "implicit_bias.dataparallel", "--pattern",
                           "parameter_server", "experiment=distributed", "dataset.n=8"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=dict(os.environ, **study.THREADS))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "parameter_server: 2 workers (3 processes), p = 840: per step 4 messages, 26880 bytes" in done.stdout
    assert "(formula: 4 messages, 26880 bytes)" in done.stdout
    assert "ranks identical: True" in done.stdout and "bit-identical" in done.stdout


def test_by_hand_bad_input_is_one_line(tmp_path):
    mpiexec, _ = study.find_mpi()
    done = subprocess.run([mpiexec, "-n", "3", sys.executable, "-m", "implicit_bias.dataparallel", "--pattern",
                           "ring_allreduce", "experiment=distributed", "dataset.d=20"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=dict(os.environ, **study.THREADS))
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "must divide the number of parameters p = 20" in lines[0], done.stderr


def test_study_end_to_end(tmp_path):
    """The command: one launch per (pattern, n), records, summary, figure."""
    out = tmp_path / "run"
    done = run_cli([*STUDY, "distributed.workers=[3]", f"hydra.run.dir={out}"], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = {p: json.loads((out / "runs" / f"{p}_n3.json").read_text()) for p in study.PATTERNS}
    for pattern, record in records.items():
        assert record["status"] == "converged" and record["matches_single_process"] and record["ranks_identical"]
        assert record["messages_per_step"] == record["formula_messages_per_step"]
        assert record["bytes_per_step"] == record["formula_bytes_per_step"]
    assert records["allreduce"]["messages_per_step"] is None and "cannot be counted" in records["allreduce"]["counts_note"]
    assert records["ring_allreduce"]["counts_match_formula"] is True
    assert records["ring_allreduce"]["identical_to"] == ["all_to_all", "parameter_server"]
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("pattern,workers,processes,parameters,messages_per_step")
    assert (out / "distributed_messages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| ring_allreduce   | 3 | 3         | 12" in done.stdout + done.stderr


def test_a_launch_that_fails_is_a_row_and_the_study_goes_on(tmp_path):
    config = study_config(["distributed.workers=[2]", "distributed.patterns=[all_to_all,ring_allreduce]",
                           "distributed.timeout_s=0.001", "figure=false"])
    records = study.run(config, tmp_path)
    assert [r["status"] for r in records] == ["error", "error"]
    assert all("timeout" in r["message"] for r in records)
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 3
    assert json.loads((tmp_path / "runs" / "ring_allreduce_n2.json").read_text())["status"] == "error"
