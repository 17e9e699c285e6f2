"""The command end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

HOMEWORK = ["sgd", "epoch_rms_adam", "sign_sgd", "rescaled_sgd"]


def test_single_run(tmp_path):
    out = tmp_path / "run"
    proc = run_cli([f"hydra.run.dir={out}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "result.json").read_text())
    assert record["status"] == "converged" and record["verdict"] == "match"
    assert record["error"] <= 1e-10
    assert (out / "trajectory.png").stat().st_size > 10_000
    assert (out / "trajectory.npz").exists()
    assert "converged" in proc.stdout and "match" in proc.stdout


def test_console_script_is_installed_and_equivalent(tmp_path):
    exe = shutil.which("implicit-bias") or str(ROOT / ".venv" / "bin" / "implicit-bias")
    proc = subprocess.run([exe, f"hydra.run.dir={tmp_path}", "figure=false", "optimizer=rescaled_sgd"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "result.json").read_text())["verdict"] == "match"


def test_four_job_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", f"optimizer={','.join(HOMEWORK)}", f"hydra.sweep.dir={sweep}", "figure=false"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(4)]
    assert [r["optimizer"]["name"] for r in records] == HOMEWORK
    assert all(r["status"] == "converged" and r["verdict"] == "match" for r in records)
    assert all(r["error"] <= 1e-10 for r in records)
    assert (sweep / "summary.md").exists()


def test_homework_experiment_prints_one_table(tmp_path):
    proc = run_cli(["experiment=homework", f"hydra.sweep.dir={tmp_path / 'hw'}", "figure=false"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout[proc.stdout.index("| job"):].splitlines()
    assert table[0].split("|")[1:-1] and "limit" in table[0] and "prediction" in table[0]
    rows = [line for line in table[2:] if line.startswith("|")]
    assert len(rows) == 4
    assert all("| match" in row and "converged" in row for row in rows)


def test_outputs_default_under_outputs_dir(tmp_path):
    proc = run_cli(["figure=false"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "outputs" / "runs").glob("*/*/result.json"))) == 1


BAD = {
    "unknown optimizer": (["optimizer=adamw"], "optimizer"),
    "negative lr": (["schedule.lr=-1"], "'lr'"),
    "theta0 of the wrong length": (["dataset.theta0=[0,0]"], "'theta0'"),
    "nan in the data": (["dataset.b=nan"], "'b'"),
    "max_steps=0": (["max_steps=0"], "'max_steps'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_nonzero_with_one_clear_message(tmp_path, case):
    args, names = BAD[case]
    proc = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert names in proc.stderr
    assert not (tmp_path / "run" / "result.json").exists()


def test_a_run_without_figures_imports_neither_matplotlib_nor_scipy(tmp_path):
    code = (
        "import sys\n"
        f"sys.argv = ['implicit-bias', 'figure=false', 'hydra.run.dir={tmp_path}']\n"
        "from implicit_bias.app import main\n"
        "main()\n"
        "print('LOADED', 'matplotlib' in sys.modules, 'scipy' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED False False" in proc.stdout
