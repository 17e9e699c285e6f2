"""Batched runs: every member bit-for-bit equal to the same run alone; the batched sweeper
writes the same records and summary as a plain multirun."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from conftest import build_config, run_cli

from implicit_bias.batch import group_key, groups, run_all, run_group
from implicit_bias.runner import run

RESULT_FIELDS = ("status", "message", "steps", "final_loss", "step_norm", "grad_norm")


def assert_same_run(batched, alone):
    for field in RESULT_FIELDS:
        a, b = getattr(batched, field), getattr(alone, field)
        assert a == b or (a != a and b != b), (field, a, b)  # bitwise equal floats (NaN = NaN)
    assert np.array_equal(batched.theta, alone.theta)
    for name, a, b in zip(alone.trajectory._fields, batched.trajectory, alone.trajectory):
        assert np.array_equal(a, b, equal_nan=True), name


def members(base: list[str], variants: list[list[str]]):
    return [build_config(base + variant) for variant in variants]


# Each group: members that stop at different steps and for different reasons (converged,
# max_steps, diverged), so members leave the arrays while the others go on.
GROUPS = {
    "sgd": (["optimizer=sgd", "max_steps=3000"],
            [["schedule.lr=0.5"], ["schedule.lr=0.05"], ["schedule.lr=1.5"], ["schedule.lr=1e-4"]]),
    "sign_sgd": (["optimizer=sign_sgd", "max_steps=5000"],
                 [["schedule.lr=0.1"], ["schedule.gamma=0.99"], ["schedule=inverse_sqrt", "schedule.lr=0.01"],
                  ["schedule=constant", "schedule.lr=0.01"]]),
    "epoch_rms_adam": (["optimizer=epoch_rms_adam", "max_steps=5000"],
                       [["optimizer.eps=0"], ["optimizer.eps=1e-3"], ["optimizer.eps=1", "schedule.lr=0.3"]]),
    "epoch_rms_adam previous, minibatches": (
        ["optimizer=epoch_rms_adam", "optimizer.epoch_gradients=previous", "dataset=wilson2017", "batch_size=2",
         "max_steps=3000"],
        [["seed=0"], ["seed=1", "optimizer.eps=1e-6"], ["seed=2", "schedule.gamma=0.99"]]),
    "rescaled_sgd": (["optimizer=rescaled_sgd", "max_steps=3000"],
                     [["schedule.lr=0.3"], ["schedule.lr=0.1"], ["schedule.lr=0.5"]]),
    "steepest l1": (["optimizer=steepest", "optimizer.norm=l1", "max_steps=3000"],
                    [["schedule.lr=0.4"], ["schedule.lr=0.05"]]),
    "steepest linf": (["optimizer=steepest", "optimizer.norm=linf", "max_steps=3000"],
                      [["schedule.lr=0.3"], ["schedule.lr=0.03"]]),
    "steepest lp": (["optimizer=steepest", "optimizer.norm=lp", "max_steps=3000"],
                    [["optimizer.p=1.5"], ["optimizer.p=3", "schedule.lr=0.2"], ["optimizer.p=20"]]),
    "momentum": (["optimizer=momentum", "max_steps=3000"],
                 [["optimizer.momentum=0.9"], ["optimizer.momentum=0.5", "schedule.lr=0.2"]]),
    "momentum, torch convention, decaying schedule": (
        ["optimizer=momentum", "optimizer.convention=torch", "schedule=inverse_sqrt", "max_steps=3000"],
        [["optimizer.momentum=0.9"], ["optimizer.momentum=0.5", "schedule.lr=0.2"]]),
    "nesterov": (["optimizer=nesterov", "max_steps=3000"],
                 [["optimizer.momentum=0.9"], ["optimizer.momentum=0.0"]]),
    "adam": (["optimizer=adam", "max_steps=20000"],
             [["optimizer.eps=1e-12"], ["optimizer.eps=1e-8", "schedule.lr=0.05"], ["optimizer.beta1=0.5"],
              ["optimizer.beta2=0.9", "schedule.lr=0.001"], ["optimizer.beta1=0.5", "optimizer.beta2=0.99999"]]),
    "adam, eps inside, no bias correction": (
        ["optimizer=adam", "optimizer.eps_placement=inside", "optimizer.bias_correction=false", "max_steps=5000"],
        [["optimizer.eps=1e-16"], ["optimizer.eps=1e-10"]]),
    "adagrad": (["optimizer=adagrad", "max_steps=3000"], [["optimizer.eps=0"], ["optimizer.eps=1e-3"]]),
    "rmsprop": (["optimizer=rmsprop", "max_steps=3000"], [["optimizer.beta=0.9"], ["optimizer.beta=0.99"]]),
    "sgd, minibatches, seeds": (["optimizer=sgd", "dataset=wilson2017", "batch_size=3", "max_steps=4000"],
                                [["seed=0"], ["seed=1"], ["seed=2", "schedule.lr=0.01"], ["shuffle=true", "seed=3"]]),
    "sgd, several equations": (["optimizer=sgd", "dataset=two_equations", "max_steps=5000"],
                               [["schedule.lr=0.1"], ["schedule.lr=0.01"]]),
}


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_member_of_a_batch_follows_its_run_alone_bit_for_bit(name):
    base, variants = GROUPS[name]
    experiments = members(base, variants)
    assert len(groups(experiments)) == 1
    batched = run_group(experiments)
    alone = [run(e.problem, e.optimizer.built, e.schedule.built, e.settings) for e in experiments]
    for b, a in zip(batched, alone):
        assert_same_run(b, a)


def test_the_group_members_actually_stop_at_different_steps():
    base, variants = GROUPS["sgd"]
    results = run_group(members(base, variants))
    assert [r.status for r in results] == ["converged", "converged", "diverged", "max_steps"]
    assert len({r.steps for r in results}) == 4


def test_runs_that_cannot_share_a_loop_go_to_separate_groups():
    experiments = [build_config(o) for o in (
        ["optimizer=adam"], ["optimizer=adam", "optimizer.eps=0.1"],  # numeric: same group
        ["optimizer=adam", "optimizer.eps_placement=inside"],  # a different option
        ["optimizer=sgd"], ["optimizer=sgd", "dataset=two_equations"],  # optimizer, data shape
        ["optimizer=sgd", "schedule=cosine"],  # any schedule shares the loop
        ["optimizer=sgd", "max_steps=10"],  # different settings
    )]
    assert groups([*experiments, None]) == [[0, 1], [2], [3, 5], [4], [6]]
    assert group_key(experiments[0]) != group_key(experiments[2])
    results = run_all([experiments[3], None, experiments[4]])
    assert results[1] is None and results[0].status == results[2].status == "converged"


def read_summary(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_batched_sweep_writes_the_same_records_and_summary_as_a_plain_multirun(tmp_path):
    sweep = ["-m", "optimizer=adam,adagrad", "optimizer.eps=1e-12,1e-8", "schedule.lr=0.01,0.1,-1",
             "max_steps=20000", "figure=false"]  # lr = -1: invalid_config in both
    plain = run_cli([*sweep, f"hydra.sweep.dir={tmp_path / 'plain'}"], cwd=tmp_path, timeout=600)
    assert plain.returncode == 0, plain.stderr
    batched = run_cli([*sweep, "hydra/sweeper=batched", f"hydra.sweep.dir={tmp_path / 'batched'}"], cwd=tmp_path,
                      timeout=600)
    assert batched.returncode == 0, batched.stderr
    log = batched.stdout + batched.stderr
    assert "batched loop: 4 runs of adam" in log and "batched loop: 4 runs of adagrad" in log
    rows_plain, rows_batched = read_summary(tmp_path / "plain" / "summary.csv"), read_summary(tmp_path / "batched" / "summary.csv")
    assert len(rows_plain) == len(rows_batched) == 12
    statuses = [row["status"] for row in rows_plain]
    assert statuses.count("invalid_config") == 4 and "converged" in statuses
    for p, b in zip(rows_plain, rows_batched):
        p.pop("wall_time_s"), b.pop("wall_time_s")
        assert p == b
    for job in range(12):
        p = json.loads((tmp_path / "plain" / str(job) / "result.json").read_text())
        b = json.loads((tmp_path / "batched" / str(job) / "result.json").read_text())
        p.pop("wall_time_s"), b.pop("wall_time_s")
        assert p == b
        # the job's composed config is Hydra's own, even where the sweeper derived it from another job's
        for name in ("overrides.yaml", "config.yaml"):
            assert (tmp_path / "batched" / str(job) / ".hydra" / name).read_text() == \
                (tmp_path / "plain" / str(job) / ".hydra" / name).read_text()
        hydra_plain, hydra_batched = (yaml.safe_load((tmp_path / kind / str(job) / ".hydra" / "hydra.yaml").read_text())
                                      ["hydra"] for kind in ("plain", "batched"))
        assert hydra_batched["job"] == hydra_plain["job"] and hydra_batched["overrides"]["task"] == hydra_plain["overrides"]["task"]
        assert hydra_batched["runtime"]["output_dir"].endswith(f"batched/{job}")
        if p["status"] != "invalid_config":
            with np.load(tmp_path / "plain" / str(job) / "trajectory.npz") as x, \
                    np.load(tmp_path / "batched" / str(job) / "trajectory.npz") as y:
                assert sorted(x.files) == sorted(y.files)
                assert all(np.array_equal(x[k], y[k]) for k in x.files)


def sweep_both_ways(tmp_path, args, cwd):
    for kind, extra in (("plain", []), ("batched", ["hydra/sweeper=batched"])):
        proc = run_cli(["-m", *args, *extra, "figure=false", "sweep_figures=false",
                        f"hydra.sweep.dir={tmp_path / 'x' / kind}"], cwd=cwd, timeout=600)
        assert proc.returncode == 0, proc.stderr
    return tmp_path / "x" / "plain", tmp_path / "x" / "batched"


def assert_same_jobs(plain, batched, jobs):
    for job in range(jobs):
        p, b = (json.loads((d / str(job) / "result.json").read_text()) for d in (plain, batched))
        p.pop("wall_time_s"), b.pop("wall_time_s")
        assert p == b
        assert (plain / str(job) / ".hydra" / "overrides.yaml").read_text() == \
            (batched / str(job) / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_batched_sweep_runs_each_job_where_its_job_would_run(tmp_path):
    # hydra.job.chdir=true: a relative data path means the job directory's file; the batch,
    # built in the launch directory, sees another file, so those jobs must run alone
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    (tmp_path / "d.csv").write_text("1, 0, 1\n0, 1, 2\n")  # ../../d.csv from the launch directory
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "d.csv").write_text("1, 1, 1\n")  # ../../d.csv from a job directory
    args = ["hydra.job.chdir=true", "dataset=from_file", "dataset.path=../../d.csv", "schedule.lr=0.05,0.1",
            "max_steps=3000"]
    plain, batched = sweep_both_ways(tmp_path, args, cwd)
    assert_same_jobs(plain, batched, 2)
    assert json.loads((batched / "0" / "result.json").read_text())["limit"] == pytest.approx([0.5, 0.5])


@pytest.mark.slow
def test_batched_sweep_keeps_swept_hydra_settings_out_of_the_task_overrides(tmp_path):
    # the command line refuses to sweep hydra.*, but a config's sweeper params may
    experiments = tmp_path / "conf" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "hydra_sweep.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      hydra.job.chdir: true,false\n"
        "      schedule.lr: 0.1,0.2\n")
    args = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=hydra_sweep", "max_steps=3000"]
    plain, batched = sweep_both_ways(tmp_path, args, tmp_path)
    assert_same_jobs(plain, batched, 4)
    for job in range(4):
        hydra_plain, hydra_batched = (yaml.safe_load((d / str(job) / ".hydra" / "hydra.yaml").read_text())["hydra"]
                                      for d in (plain, batched))
        assert hydra_batched["overrides"]["task"] == hydra_plain["overrides"]["task"]
        assert hydra_batched["job"]["override_dirname"] == hydra_plain["job"]["override_dirname"]


def test_a_group_too_large_for_the_memory_budget_runs_as_several_loops(monkeypatch):
    import implicit_bias.batch as batch

    experiments = members(["optimizer=adam", "max_steps=2000"],
                          [[f"schedule.lr={lr}"] for lr in (0.1, 0.2, 0.3, 0.4, 0.5)])
    assert batch.loops(experiments) == [[0, 1, 2, 3, 4]]
    per_member = 8 * 3 * (len(batch.log_spaced_steps(2000, 50)) + 1 + 8)
    monkeypatch.setattr(batch, "LOOP_MEMORY", 2 * per_member)
    assert batch.loops(experiments) == [[0, 1], [2, 3], [4]]
    for b, e in zip(batch.run_all(experiments), experiments):
        assert_same_run(b, run(e.problem, e.optimizer.built, e.schedule.built, e.settings))


def test_a_sweep_holds_each_dataset_once():
    from implicit_bias.batch import share_data

    experiments = share_data([build_config(o) for o in (["schedule.lr=0.1"], ["schedule.lr=0.2"],
                                                        ["dataset=two_equations"])] + [None])
    assert experiments[0].problem is experiments[1].problem and experiments[2].problem is not experiments[0].problem
    assert experiments[3] is None
