"""Sweeps end to end: summaries, nothing lost, launchers, experiments, progress, reproducibility."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from implicit_bias.summary import collect, main as summarize_main, summarize
from conftest import run_cli

pytestmark = pytest.mark.slow


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def sweep(tmp_path, *args, name="sweep"):
    out = tmp_path / name
    proc = run_cli(["-m", *args, f"hydra.sweep.dir={out}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_lr_sweep_keeps_every_job_with_its_status(tmp_path):
    out, proc = sweep(tmp_path, "optimizer=sgd", "schedule.lr=0.01,0.1,0.4,100")
    rows = read_csv(out / "summary.csv")
    assert [r["schedule.lr"] for r in rows] == ["0.01", "0.1", "0.4", "100"]
    assert [r["status"] for r in rows] == ["converged", "converged", "converged", "diverged"]
    assert {"optimizer", "dataset", "schedule", "status", "steps", "error", "verdict", "wall_time_s", "limit"} <= set(rows[0])
    limits = [json.loads(r["limit"]) for r in rows[:3]]
    assert np.max(np.abs(np.array(limits) - np.array([1.0, 0.1, 0.01]) / 1.0101)) <= 1e-10
    assert "diverged" in (out / "summary.md").read_text()
    assert (out / "sweep_trajectories.png").exists() and (out / "sweep_schedule.lr.png").exists()
    assert "4 jobs: 3 converged, 1 diverged" in proc.stdout


def test_an_invalid_value_is_recorded_and_the_rest_completes(tmp_path):
    out, _ = sweep(tmp_path, "schedule.lr=0.1,-1,0.2", "figure=false")
    rows = read_csv(out / "summary.csv")
    assert [r["status"] for r in rows] == ["converged", "invalid_config", "converged"]
    assert "'lr'" in rows[1]["message"] and "Got -1" in rows[1]["message"]
    record = json.loads((out / "1" / "result.json").read_text())
    assert record["limit"] is None and record["verdict"] == "not_run"


def test_unresolvable_values_and_all_invalid_sweeps_still_get_a_summary(tmp_path):
    out, _ = sweep(tmp_path, "schedule.lr=0.1,${oc.env:IMPLICIT_BIAS_UNSET_VARIABLE},0.2", "figure=false", name="interp")
    assert [r["status"] for r in read_csv(out / "summary.csv")] == ["converged", "invalid_config", "converged"]
    out, proc = sweep(tmp_path, "+unknown_key=1,2", name="all_invalid")
    assert [r["status"] for r in read_csv(out / "summary.csv")] == ["invalid_config", "invalid_config"]
    assert "2 jobs: 2 invalid_config" in proc.stdout
    assert oct((out / "summary.csv").stat().st_mode & 0o777) != "0o600"  # readable by others, like Hydra's files


def test_multirun_jobs_are_quiet_unless_asked(tmp_path):
    _, quiet = sweep(tmp_path, "optimizer=sgd,sign_sgd", "figure=false", name="quiet")
    assert "records in" not in quiet.stdout and "| job" in quiet.stdout
    _, loud = sweep(tmp_path, "optimizer=sgd,sign_sgd", "figure=false", "progress=true", name="loud")
    assert loud.stdout.count("records in") == 2


def test_long_single_runs_report_progress(tmp_path):
    proc = run_cli(["optimizer=sign_sgd", "schedule=constant", "max_steps=300000", "progress_every_s=0.05",
                    "figure=false", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("step ")]
    assert len(lines) >= 2
    assert "loss" in lines[0] and "distance to prediction" in lines[0]


def test_same_config_gives_bit_identical_records(tmp_path):
    records = []
    for name in ("a", "b"):
        proc = run_cli(["optimizer=epoch_rms_adam", "seed=7", "figure=false", f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        record = json.loads((tmp_path / name / "result.json").read_text())
        record.pop("wall_time_s")
        records.append(record)
    assert records[0] == records[1]
    assert records[0]["seed"] == 7
    with np.load(tmp_path / "a" / "trajectory.npz") as a, np.load(tmp_path / "b" / "trajectory.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_joblib_launcher_gives_the_same_records_as_the_basic_one(tmp_path):
    args = ["optimizer=sgd,sign_sgd,rescaled_sgd,epoch_rms_adam", "figure=false", "sweep_figures=false"]
    basic, _ = sweep(tmp_path, *args, name="basic")
    parallel, _ = sweep(tmp_path, *args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", name="parallel")
    for job in range(4):
        a = json.loads((basic / str(job) / "result.json").read_text())
        b = json.loads((parallel / str(job) / "result.json").read_text())
        assert a["status"] == "converged" and a["limit"] == b["limit"] and a["steps"] == b["steps"]
    assert len(read_csv(parallel / "summary.csv")) == 4


def test_submitit_local_launcher(tmp_path):
    out, _ = sweep(tmp_path, "optimizer=sgd,sign_sgd", "figure=false", "sweep_figures=false",
                   "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5")
    rows = read_csv(out / "summary.csv")
    assert [r["optimizer"] for r in rows] == ["sgd", "sign_sgd"]
    assert all(r["status"] == "converged" and r["verdict"] == "match" for r in rows)


def test_the_shipped_slurm_launcher_config_composes():
    with initialize_config_module(version_base="1.3", config_module="implicit_bias.conf"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=cpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "cpu" and launcher.cpus_per_task == 1 and launcher.timeout_min == 60


def test_summarize_command_rebuilds_a_sweep_and_keeps_killed_jobs(tmp_path):
    out, _ = sweep(tmp_path, "optimizer=sgd,sign_sgd", "figure=false")
    for name in ("summary.csv", "summary.md", "sweep_trajectories.png"):
        (out / name).unlink()
    (out / "1" / "result.json").unlink()  # as if job 1 had been killed before writing
    exe = shutil.which("implicit-bias-summarize")
    cmd = [exe] if exe else [sys.executable, "-m", "implicit_bias.summary"]
    proc = subprocess.run([*cmd, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(out / "summary.csv")
    assert [r["status"] for r in rows] == ["converged", "missing"]
    assert rows[1]["optimizer"] == "sign_sgd"
    assert (out / "sweep_trajectories.png").exists()
    bad = subprocess.run([*cmd, str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a sweep directory" in bad.stderr


@pytest.mark.parametrize("experiment, expected", [
    ("sign_schedules", ["max_steps", "converged", "converged", "converged"]),
    ("lr_sweep", ["converged"] * 12 + ["diverged"] * 2 + ["converged"] * 8 + ["diverged"] * 6),
])
def test_experiments(tmp_path, experiment, expected):
    out = tmp_path / experiment
    proc = run_cli([f"experiment={experiment}", f"hydra.sweep.dir={out}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(out / "summary.csv")
    assert [r["status"] for r in rows] == expected
    converged = [r for r in rows if r["status"] == "converged"]
    assert all(r["verdict"] == "match" for r in converged)
    if experiment == "lr_sweep":  # the limit does not depend on lr over the convergent range
        for optimizer in ("sgd", "rescaled_sgd"):
            limits = np.array([json.loads(r["limit"]) for r in converged if r["optimizer"] == optimizer])
            assert np.max(np.abs(limits - limits[0])) <= 1e-10 * np.max(np.abs(limits[0]))
        assert (out / "sweep_schedule.lr.png").exists()
    else:  # the constant step never gets within the tolerance; the geometric one is fastest
        steps = [r["steps_within_tol"] for r in rows]
        assert steps[0] == "" and int(steps[3]) < int(steps[2]) < int(steps[1])
    assert (out / "sweep_trajectories.png").exists()


def run_experiment(tmp_path, name):
    """``implicit-bias experiment=NAME``; returns the sweep directory and its summary rows."""
    out = tmp_path / name
    proc = run_cli([f"experiment={name}", f"hydra.sweep.dir={out}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, read_csv(out / "summary.csv")


def test_eps_sweep_interpolates_between_the_sign_and_the_gd_limits(tmp_path):
    out, rows = run_experiment(tmp_path, "eps_sweep")
    assert all(r["status"] == "converged" and r["verdict"] == "approximate" for r in rows)
    to_sign = [float(r["distance_to_min_linf"]) for r in rows]
    to_gd = [float(r["distance_to_min_l2"]) for r in rows]
    assert to_sign[0] < 1e-9 and to_sign == sorted(to_sign)  # grows with eps
    assert to_gd[-1] < 0.1 * to_gd[0]  # and the limit approaches the GD line
    assert (out / "sweep_optimizer.eps.png").exists()


def test_p_sweep_lands_on_the_min_lp_interpolant_every_time(tmp_path):
    _, rows = run_experiment(tmp_path, "p_sweep")
    assert len(rows) == 10
    assert all(float(r["error"]) <= 1e-10 for r in rows)  # on the min-ℓp interpolant every time
    verdicts = {r["optimizer.p"]: r["verdict"] for r in rows}
    # at p = 1.1 the interpolant [1, 1e-10, 1e-20] is 1e-10 from the ℓ1 corner: a 1e-10 tolerance
    # cannot tell them apart, so that one verdict is honestly inconclusive (at 1.05 they are one point)
    assert verdicts.pop("1.1") == "inconclusive"
    assert set(verdicts.values()) == {"match"}
    first, last = json.loads(rows[0]["limit"]), json.loads(rows[-1]["limit"])
    assert first[0] > 0.999 and first[1] < 1e-9  # p → 1: the ℓ1 corner
    assert max(last) - min(last) < 0.1  # p → ∞: toward the sign line


def test_separating_experiment(tmp_path):
    out, table = run_experiment(tmp_path, "separating")
    rows = {(r["dataset"], r["optimizer"]): r for r in table}
    assert len(rows) == 18
    for key in [("two_equations", o) for o in ("sign_sgd", "adam", "adagrad")] + [("wilson2017", o) for o in (
            "sgd", "momentum", "nesterov", "sign_sgd", "adam", "adagrad", "epoch_rms_adam")]:
        assert rows[key]["status"] == "converged", key
    for optimizer in ("sign_sgd", "adam", "adagrad"):  # no theory on two_equations, and not min-ℓ∞
        r = rows[("two_equations", optimizer)]
        assert r["verdict"] == "no_prediction" and float(r["distance_to_min_linf"]) > 1e-3
        w = rows[("wilson2017", optimizer)]  # Wilson's condition holds: the min-ℓ∞ interpolant
        assert float(w["distance_to_min_linf"]) < 1e-6 and w["verdict"] in ("match", "approximate")
    assert float(rows[("wilson2017", "sgd")]["distance_to_min_l2"]) < 1e-10
    assert float(rows[("wilson2017", "epoch_rms_adam")]["distance_to_min_linf"]) > 1e-2
    assert (out / "sweep_references.png").exists()


def test_collect_orders_jobs_numerically(tmp_path):
    for job in (10, 2, 1):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
    assert [job for job, _ in collect(tmp_path)] == ["1", "2", "10"]
    assert all(record["status"] == "missing" for _, record in collect(tmp_path))
    summarize(tmp_path, figures=False)
    assert len(read_csv(tmp_path / "summary.csv")) == 3
    assert summarize_main([str(tmp_path), "--no-figures"]) == 0
