"""Figures draw whatever a run can produce, and a figure that fails never costs a record."""

from __future__ import annotations

import json
import logging
import textwrap

import numpy as np
import pytest
from PIL import Image

import implicit_bias.plotting as plotting
from implicit_bias.app import execute
from implicit_bias.summary import summarize
from conftest import build_config, run_cli

pytest.importorskip("matplotlib")


def assert_png(path) -> None:
    """The file exists and is a complete, decodable PNG image of a sensible size."""
    assert path.exists(), f"{path.name} was not written"
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes every byte: a truncated file fails here
        assert image.width >= 300 and image.height >= 200


# name: overrides of one run whose figure must draw
RUNS = {
    "zero loss throughout (a start on the solution, d = 2)": ["dataset.a=[2,1]", "dataset.b=3", "dataset.theta0=[1,1]"],
    "a start on the solution in 3-D": ["dataset.theta0=[1,0,0]"],
    "constant positive loss (an inconsistent system at its least-squares point), d = 1":
        ["dataset=linear_system", "dataset.A=[[1],[1]]", "dataset.b=[0,2]", "dataset.theta0=[1]"],
    "a single step": ["max_steps=1"],
    "d = 1": ["dataset=linear_system", "dataset.A=[[2]]", "dataset.b=[4]"],
    "d = 10^4": ["dataset=gaussian", "dataset.n=1", "dataset.d=10000", "schedule.lr=4e-5"],  # stable: lr < 1/‖a‖²
    "diverged in 3-D": ["schedule.lr=1.5"],
    "non-finite in 3-D": ["schedule.lr=1e300"],
    "non-finite, d = 2": ["dataset.a=[2,1]", "dataset.b=3", "schedule.lr=1e300"],
    "no prediction": ["optimizer=epoch_rms_adam", "optimizer.eps=1e-3", "max_steps=2000"],
}


@pytest.mark.parametrize("case", list(RUNS))
def test_the_run_figure_draws(case, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="implicit_bias"):
        record = execute(build_config(RUNS[case]), tmp_path, RUNS[case])
    assert not [r for r in caplog.records if "not written" in r.getMessage()], caplog.text
    assert_png(tmp_path / "trajectory.png")
    assert (tmp_path / "result.json").exists()
    if case.startswith("d = 10^4"):
        assert record["status"] == "converged"  # the coordinates panel, not a blow-up


def test_the_cases_are_what_they_claim(tmp_path):
    """The edge cases above really are edge cases (else they would test nothing)."""
    zero = execute(build_config(RUNS["zero loss throughout (a start on the solution, d = 2)"] + ["figure=false"]),
                   tmp_path, [])
    assert zero["final_loss"] == 0.0 and zero["error"] == 0.0
    with np.load(tmp_path / "trajectory.npz") as npz:
        assert np.all(npz["loss"] == 0.0)
    constant = execute(build_config(RUNS["constant positive loss (an inconsistent system at its least-squares point), "
                                         "d = 1"] + ["figure=false"]), tmp_path, [])
    with np.load(tmp_path / "trajectory.npz") as npz:
        assert np.all(npz["loss"] == npz["loss"][0]) and npz["loss"][0] > 0 and npz["theta"].shape[1] == 1
    assert constant["status"] == "converged"
    blown = execute(build_config(RUNS["non-finite in 3-D"] + ["figure=false"]), tmp_path, [])
    assert blown["status"] == "non_finite"
    with np.load(tmp_path / "trajectory.npz") as npz:
        assert not np.all(np.isfinite(npz["theta"]))


def test_a_huge_d_figure_draws_a_few_coordinates_and_says_which():
    theta = np.zeros((5, 10_000))
    theta[-1, [3, 17, 9_999]] = [5.0, -7.0, 1.0]
    chosen, which = plotting.shown_coordinates(theta)
    assert len(chosen) == plotting.MAX_COORDINATES
    assert {3, 17, 9_999} <= set(chosen.tolist())
    assert which == f"the {plotting.MAX_COORDINATES} of 10000 coordinates that moved most"
    assert plotting.shown_coordinates(np.zeros((2, 3)))[1] == ""


def make_sweep(tmp_path, key, values, common, name="sweep"):
    """A sweep directory as a multirun leaves it (job directories with their records), without
    starting Hydra: one job per value of ``key``."""
    sweep = tmp_path / name
    for job, value in enumerate(values):
        overrides = [*common, f"{key}={value}"]
        execute(build_config([*overrides, "figure=false"]), sweep / str(job), overrides)
    return sweep


SWEEPS = {
    "diverged and non-finite runs among converged ones": ("schedule.lr", ["0.1", "1.5", "1e300"], []),
    "every run starts on the solution": ("schedule.lr", ["0.1", "0.2"],
                                         ["dataset.a=[2,1]", "dataset.b=3", "dataset.theta0=[1,1]"]),
    "a single step": ("schedule.lr", ["0.1", "0.2"], ["max_steps=1"]),
    "d = 1": ("schedule.lr", ["0.1", "0.2"], ["dataset=linear_system", "dataset.A=[[2]]", "dataset.b=[4]"]),
    "d = 10^4": ("schedule.lr", ["2e-5", "4e-5"], ["dataset=gaussian", "dataset.n=1", "dataset.d=10000"]),
    "every run diverged": ("schedule.lr", ["1.5", "3"], []),
}


@pytest.mark.parametrize("case", list(SWEEPS))
def test_the_sweep_figures_draw(case, tmp_path):
    key, values, common = SWEEPS[case]
    sweep = make_sweep(tmp_path, key, values, common)
    text = summarize(sweep)
    assert "not written" not in text, text
    for name in ("sweep_trajectories.png", "sweep_references.png", f"sweep_{key}.png"):
        assert_png(sweep / name)


def test_a_sweep_figure_leaves_out_a_damaged_trajectory_and_draws_the_rest(tmp_path):
    sweep = make_sweep(tmp_path, "schedule.lr", ["0.1", "0.2"], [])
    (sweep / "1" / "trajectory.npz").write_bytes(b"PK\x03\x04 truncated")
    text = summarize(sweep)
    assert "not written" not in text
    assert_png(sweep / "sweep_trajectories.png")


def test_a_figure_failure_changes_no_record(tmp_path, monkeypatch, caplog):
    """The record is written before the figure; a renderer that raises leaves it byte for byte."""
    seen = {}

    def broken(*args, **kwargs):
        seen["result.json"] = (tmp_path / "result.json").read_bytes()
        seen["trajectory.npz"] = (tmp_path / "trajectory.npz").read_bytes()
        raise ValueError("Data cannot be log-scaled because all values are <= 0.")

    monkeypatch.setattr(plotting, "render_run", broken)
    with caplog.at_level(logging.WARNING, logger="implicit_bias"):
        record = execute(build_config(["optimizer=sign_sgd"]), tmp_path, ["optimizer=sign_sgd"])
    assert seen, "the renderer was not called"
    assert (tmp_path / "result.json").read_bytes() == seen["result.json"]
    assert (tmp_path / "trajectory.npz").read_bytes() == seen["trajectory.npz"]
    assert json.loads(seen["result.json"]) == record and record["verdict"] == "match"
    assert not (tmp_path / "trajectory.png").exists() and not list(tmp_path.glob(".*.tmp"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["warning: figure trajectory.png not written (ValueError: Data cannot be log-scaled because "
                        "all values are <= 0.); the records are complete"]


def test_a_sweep_figure_failure_costs_only_that_figure(tmp_path, monkeypatch):
    sweep = make_sweep(tmp_path, "schedule.lr", ["0.1", "0.2"], [])

    def broken(*args, **kwargs):
        raise RuntimeError("renderer broke\nsecond line")

    monkeypatch.setattr(plotting, "render_sweep", broken)
    text = summarize(sweep)
    assert "warning: figure sweep_trajectories.png not written (RuntimeError: renderer broke); the summary is complete" in text
    assert (sweep / "summary.csv").exists() and (sweep / "summary.md").exists()
    assert_png(sweep / "sweep_schedule.lr.png")


BREAK_RUN_FIGURE = textwrap.dedent("""\
    import sys
    import implicit_bias.plotting as plotting

    def broken(*args, **kwargs):
        raise ValueError("Data cannot be log-scaled because all values are <= 0.")

    plotting.render_run = broken
    from implicit_bias.app import main
    sys.argv = ["implicit-bias", *sys.argv[1:]]
    main()
""")


@pytest.mark.slow
def test_a_single_run_whose_figure_fails_exits_0_with_its_summary(tmp_path):
    script = tmp_path / "broken_figure.py"
    script.write_text(BREAK_RUN_FIGURE)
    proc = run_cli_script(script, [f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in (proc.stdout + proc.stderr).splitlines() if "not written" in line]
    assert warning == ["warning: figure trajectory.png not written (ValueError: Data cannot be log-scaled because "
                       "all values are <= 0.); the records are complete"]
    assert "match" in proc.stdout and "records in" in proc.stdout and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "run" / "result.json").read_text())["verdict"] == "match"


@pytest.mark.slow
def test_a_multirun_figure_failure_keeps_every_finished_record(tmp_path):
    """The failure that used to overwrite each job's 'match' record with status 'error'."""
    script = tmp_path / "broken_figure.py"
    script.write_text(BREAK_RUN_FIGURE)
    sweep = tmp_path / "sweep"
    proc = run_cli_script(script, ["-m", "optimizer=sgd,sign_sgd", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads((sweep / str(job) / "result.json").read_text()) for job in range(2)]
    assert [r["status"] for r in records] == ["converged", "converged"]
    assert [r["verdict"] for r in records] == ["match", "match"]
    assert "2 jobs: 2 converged" in proc.stdout


@pytest.mark.slow
def test_the_start_on_the_solution_command_draws_its_figure(tmp_path):
    """The command from the README that crashed in the loss panel."""
    out = tmp_path / "run"
    proc = run_cli(["dataset.a=[2,1]", "dataset.b=3", "dataset.theta0=[1,1]", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "not written" not in proc.stdout + proc.stderr
    assert_png(out / "trajectory.png")


def run_cli_script(script, args, cwd):
    """Like :func:`conftest.run_cli`, but through a script that patches the package first."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)
