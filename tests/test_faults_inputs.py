"""Bad inputs and faults before and around the run: each is one clear line before the first
step (exit code 2 for a single run, an ``invalid_config`` record in a multirun), and the
batched sweeper never fails as a whole (an unexpected error is that job's ``error`` record;
Ctrl-C keeps what was done, writes the summary and exits with 130)."""

from __future__ import annotations

import csv
import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from conftest import build_config, compose_config, run_cli
from implicit_bias import problems
from implicit_bias.build import build
from implicit_bias.params import ConfigError
from implicit_bias.problems import from_file

ERROR_PREFIX = "implicit-bias: error: "


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single line a refused single run prints: exit code 2, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), proc.stderr
    return lines[0]


# ------------------------------------------------------------------ experiment=nope


@pytest.mark.slow
def test_an_unknown_experiment_is_refused_with_the_available_ones(tmp_path):
    proc = run_cli(["experiment=nope", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "Could not find 'experiment/nope'" in proc.stderr
    assert "homework" in proc.stderr and "lr_sweep" in proc.stderr  # the list of available experiments
    assert not (tmp_path / "run" / "result.json").exists()


def test_no_experiment_is_still_the_default():
    config = compose_config()
    assert "experiment" not in config and config["optimizer"]["name"] == "sgd"
    assert compose_config(["experiment=homework"])["figure"] is False


# ------------------------------------------------------------------ max_steps


@pytest.mark.parametrize("value", [2**63 - 1, 10**20, 10**15 + 1, 0])
def test_max_steps_beyond_the_bound_is_refused(value):
    config = compose_config()
    config["max_steps"] = value
    with pytest.raises(ConfigError, match=rf"'max_steps' parameter .* must be an int in \[1, 1e\+15\]. Got {value} "):
        build(config)


@pytest.mark.slow
def test_max_steps_of_int64s_maximum_is_one_line(tmp_path):
    line = one_error_line(run_cli([f"max_steps={2**63 - 1}", f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path))
    assert "'max_steps'" in line and str(2**63 - 1) in line


@pytest.mark.slow
def test_a_batched_sweep_with_one_invalid_max_steps_runs_the_others_batched(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli(["-m", "hydra/sweeper=batched", f"max_steps=3000,{10**20},{2**63 - 1}", "schedule.lr=0.1,0.2",
                    "figure=false", "sweep_figures=false", f"hydra.sweep.dir={out}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "batched loop: 2 runs of sgd" in proc.stdout + proc.stderr
    rows = read_csv(out / "summary.csv")
    assert [r["status"] for r in rows] == ["converged", "converged"] + ["invalid_config"] * 4
    assert all("'max_steps'" in r["message"] for r in rows[2:])


# ------------------------------------------------------------------ dataset=from_file


@pytest.fixture
def good_npz(tmp_path):
    path = tmp_path / "good.npz"
    np.savez(path, A=np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]]), b=np.array([1.0, 1.0]))
    return path


def refused(path) -> str:
    with pytest.raises(ConfigError) as info:
        from_file(str(path), None)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message or os.path.basename(str(path)) in message  # it names the file
    return message


def test_an_empty_npz_is_refused(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    assert refused(tmp_path / "empty.npz").endswith("is empty (0 bytes).")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_npz_is_refused(tmp_path, good_npz, keep):
    data = good_npz.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:int(len(data) * keep)])
    assert "truncated or damaged (BadZipFile" in refused(tmp_path / "cut.npz")


def test_a_damaged_npz_member_is_refused(tmp_path, good_npz):
    data = bytearray(good_npz.read_bytes())
    with zipfile.ZipFile(good_npz) as archive:
        info = archive.getinfo("A.npy")
    offset = info.header_offset + 30 + len(info.filename) + 130  # inside A's data, past its .npy header
    data[offset:offset + 8] = b"\xff" * 8
    (tmp_path / "flipped.npz").write_bytes(bytes(data))
    assert "truncated or damaged (BadZipFile: Bad CRC-32" in refused(tmp_path / "flipped.npz")


def test_an_unreadable_file_is_refused(tmp_path, good_npz, monkeypatch):
    # root reads any file, so the permission error is simulated where the file is opened
    opened = pathlib.Path.open

    def denied(self, *args, **kwargs):
        if self == good_npz:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", denied)
    assert refused(good_npz).endswith("cannot be opened (Permission denied).")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_an_unreadable_file_is_refused_for_real(tmp_path, good_npz):
    good_npz.chmod(0)
    try:
        assert "Permission denied" in refused(good_npz)
    finally:
        good_npz.chmod(0o644)


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    assert refused(tmp_path / "a.npz").endswith("is a symbolic link loop.")


def test_a_dangling_symlink_is_refused(tmp_path):
    (tmp_path / "a.csv").symlink_to(tmp_path / "gone.csv")
    assert "is a symbolic link to" in refused(tmp_path / "a.csv")


@pytest.mark.parametrize("name", ["data.npz", "data.csv", "plain"])
def test_a_directory_is_refused(tmp_path, name):
    (tmp_path / name).mkdir()
    assert refused(tmp_path / name).endswith("is a directory.")


def test_a_device_is_refused():
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    assert refused("/dev/null").endswith("is not a regular file (a device, pipe or socket).")


def test_a_csv_of_blank_lines_is_refused(tmp_path):
    (tmp_path / "blank.csv").write_text("\n  \n")
    assert "at least one equation" in refused(tmp_path / "blank.csv")


def test_a_single_npy_array_is_not_an_archive(tmp_path):
    with open(tmp_path / "one.npz", "wb") as handle:
        np.save(handle, np.ones((2, 2)))
    assert "not an archive of named arrays" in refused(tmp_path / "one.npz")


@pytest.mark.slow
def test_a_symlink_loop_is_one_line_on_the_command_line(tmp_path):
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    line = one_error_line(run_cli(["dataset=from_file", "dataset.path=a.npz", f"hydra.run.dir={tmp_path / 'r'}"],
                                  cwd=tmp_path))
    assert "'a.npz'" in line and "symbolic link loop" in line


# ------------------------------------------------------------------ memory


def test_a_gaussian_system_far_larger_than_memory_is_refused_before_allocation(monkeypatch):
    def no_generation(*args, **kwargs):
        raise AssertionError("the data must not be generated")

    monkeypatch.setattr(problems.np.random, "default_rng", no_generation)
    with pytest.raises(ConfigError) as info:
        build_config(["dataset=gaussian", "dataset.n=1000000", "dataset.d=1000000"])
    message = str(info.value)
    # 3 copies (A, |A|, −(2/n)Aᵀ) of 10^12 float64 entries: 24 TB
    assert message.startswith("The dataset 'gaussian' with n = 1000000 and d = 1000000 needs about 24 TB of memory")
    assert "is available" in message and "n · d must be at most" in message


def test_the_memory_rule_uses_three_copies_of_a(monkeypatch):
    entries = 100 * 1000
    monkeypatch.setattr(problems, "available_memory", lambda: 3 * 8 * entries)
    problems.gaussian(100, 1000, None, 0, None)  # exactly fits
    with pytest.raises(ConfigError, match=r"n = 100 and d = 1250 needs about 3 MB of memory \(3 copies of A at 1 MB "
                                          r"each: A, \|A\| and −\(2/n\)Aᵀ\), but 2.4 MB is available; n · d must be "
                                          r"at most 100 000 here."):
        problems.gaussian(100, 1250, None, 0, None)
    with pytest.raises(ConfigError, match="n = 100 and d = 1001 needs about"):
        problems.gaussian(100, 1001, None, 0, None)
    with pytest.raises(ConfigError, match=r"'wilson2017' with n = 10000 \(d = "):
        problems.wilson2017(10_000, 0.6, 0)


def test_an_npz_too_large_for_memory_is_refused_from_its_header(tmp_path, monkeypatch):
    np.savez(tmp_path / "big.npz", A=np.ones((200, 300)), b=np.ones(200))
    monkeypatch.setattr(problems, "available_memory", lambda: 3 * 8 * 200 * 300 - 1)
    loaded = []
    original = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: loaded.append(key) or original(self, key))
    with pytest.raises(ConfigError, match=r"The array 'A' of .*big.npz.*of shape \(200, 300\), needs about 1.44 MB"):
        from_file(str(tmp_path / "big.npz"), None)
    assert loaded == []  # refused before A was read


def test_available_memory_is_a_positive_number_here():
    available = problems.available_memory()
    assert available is None or available > 0


def test_bad_settings_are_refused_before_the_dataset_is_built(monkeypatch):
    def no_generation(*args, **kwargs):
        raise AssertionError("the data must not be generated")

    monkeypatch.setattr(problems.np.random, "default_rng", no_generation)
    with pytest.raises(ConfigError, match="'lr'"):
        build_config(["dataset=gaussian", "schedule.lr=-1"])
    with pytest.raises(ConfigError, match="'batch_size'"):
        build_config(["dataset=gaussian", "batch_size=0"])


@pytest.mark.slow
def test_a_gaussian_system_far_larger_than_memory_is_one_line(tmp_path):
    line = one_error_line(run_cli(["dataset=gaussian", "dataset.n=1000000", "dataset.d=1000000",
                                   f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path))
    assert "24 TB" in line


# ------------------------------------------------------------------ a campaign of other inputs

CAMPAIGN = [  # (overrides, the parameter the one line must name)
    (["dataset=gaussian", "dataset.n=-5"], "'n'"),
    (["dataset=gaussian", "dataset.n=0"], "'n'"),
    (["dataset=gaussian", "dataset.d=1.5"], "'d'"),
    (["dataset=gaussian", "dataset.seed=-1"], "'seed'"),
    (["dataset=gaussian", "dataset.scales=[1]"], "'scales'"),
    (["dataset=gaussian", "dataset.n=10", "dataset.d=99999999999999999999999"], "gaussian"),
    (["batch_size=0"], "'batch_size'"),
    (["batch_size=-3"], "'batch_size'"),
    (["batch_size=[1]"], "'batch_size'"),
    (["seed=-1"], "'seed'"),
    (["seed=abc"], "'seed'"),
    (["dataset.a=[]"], "'a'"),
    (["dataset.a=[[1,2],[3]]"], "'a'"),
    (["dataset.a=[1,nan]"], "'a'"),
    (["dataset.a='nan'"], "'a'"),
    (["dataset.a=[1,'2']"], "'a'"),
    (["dataset.b=nan"], "'b'"),
    (["dataset.b='1'"], "'b'"),
    (["dataset.theta0=[]"], "'theta0'"),
    (["dataset.theta0=[[0],[0],[0]]"], "'theta0'"),
    (["dataset.theta0=[0,0]"], "'theta0'"),
    (["schedule.lr=inf"], "'lr'"),
    (["schedule.lr=nan"], "'lr'"),
    (["schedule.lr=null"], "'lr'"),
    (["schedule.lr={a:1}"], "'lr'"),
    (["max_steps=null"], "'max_steps'"),
    (["max_steps=1.5"], "'max_steps'"),
    (["check_every=0"], "'check_every'"),
    (["records_per_decade=100000"], "'records_per_decade'"),
    (["verdict_tol=nan"], "'verdict_tol'"),
    (["shuffle=1"], "'shuffle'"),
    (["optimizer=steepest", "optimizer.norm=lq"], "'norm'"),
    (["optimizer=preconditioned", "optimizer.diagonal=[0,1,1]"], "'diagonal'"),
    (["dataset=linear_system", "dataset.A=[[]]"], "'A'"),
    (["dataset=linear_system", "dataset.A=[[[1]]]"], "'A'"),
    (["dataset=linear_system", "dataset.A=[[1,2]]", "dataset.b=[[1]]"], "'b'"),
    (["dataset=wilson2017", "dataset.n=99999999999999999999"], "'n'"),
    (["dataset=from_file", "dataset.path=null"], "'path'"),
    (["dataset=from_file", "dataset.path=/dev/null"], "'path'"),
]


@pytest.mark.parametrize("overrides, names", CAMPAIGN, ids=[" ".join(o) for o, _ in CAMPAIGN])
def test_each_bad_input_is_one_message_naming_it(overrides, names):
    with pytest.raises(ConfigError) as info:
        build_config(overrides)
    message = str(info.value)
    assert names in message and "\n" not in message


@pytest.mark.parametrize("seed", [2**64, 10**40])
def test_seeds_beyond_64_bits_are_accepted_and_reproducible(seed):
    a, b = (build_config(["dataset=gaussian", "dataset.n=3", "dataset.d=5", f"dataset.seed={seed}", f"seed={seed}",
                          "batch_size=1"]) for _ in range(2))
    assert a.seed == seed and np.array_equal(a.problem.A, b.problem.A)


# ------------------------------------------------------------------ the batched sweeper

# The command with the gaussian factory made to raise RuntimeError for dataset.seed=1: data on
# which a factory fails with something other than a ConfigError. With --task-raises, the
# task's own handling of that error is taken away too, so the exception escapes the task.
DRIVER = """
import sys
from implicit_bias import app, problems
from implicit_bias.params import Spec

original = problems.DATASETS["gaussian"]

def gaussian(n, d, scales, seed, theta0):
    if seed == 1:
        raise RuntimeError("the generator failed on seed 1")
    return original.factory(n, d, scales, seed, theta0)

problems.DATASETS["gaussian"] = Spec(gaussian, original.params)
if sys.argv[1] == "--task-raises":
    def reraise(err, *args, **kwargs):
        raise err
    app._unexpected = reraise
sys.argv = ["implicit-bias", *sys.argv[2:]]
app.main()
"""


def run_driver(tmp_path, mode, args):
    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-c", DRIVER, mode, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_a_factory_error_in_a_batched_sweep_is_that_jobs_error_record_as_in_a_plain_multirun(tmp_path):
    args = ["-m", "dataset=gaussian", "dataset.n=4", "dataset.d=6", "dataset.seed=0,1,2", "max_steps=20000",
            "figure=false", "sweep_figures=false"]
    records = {}
    for name, mode, extra in (("plain", "--plain", []), ("batched", "--plain", ["hydra/sweeper=batched"]),
                              ("batched_task_raises", "--task-raises", ["hydra/sweeper=batched"])):
        proc = run_driver(tmp_path, mode, [*args, *extra, f"hydra.sweep.dir={tmp_path / name}"])
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        rows = read_csv(tmp_path / name / "summary.csv")
        assert [r["status"] for r in rows] == ["converged", "error", "converged"], name
        assert rows[1]["message"] == "RuntimeError: the generator failed on seed 1"
        records[name] = [json.loads((tmp_path / name / str(job) / "result.json").read_text()) for job in range(3)]
        for record in records[name]:
            record.pop("wall_time_s")
    assert records["plain"] == records["batched"] == records["batched_task_raises"]


@pytest.mark.slow
def test_ctrl_c_in_a_batched_loop_keeps_every_member_and_the_summary(tmp_path):
    # three loops (one per θ0): the first ends at once (θ0 is a solution), the second holds a
    # member that converges and one that never does (signSGD with a constant step), the third
    # has not started when Ctrl-C comes
    out = tmp_path / "sweep"
    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "implicit_bias", "-m", "hydra/sweeper=batched", "optimizer=sign_sgd",
         "dataset.theta0=[1,0,0],null,[0,0,1]", "schedule=exponential,constant", "max_steps=1000000000",
         "figure=false", f"hydra.sweep.dir={out}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "1" / "result.json").exists():  # the first loop is recorded: the second runs
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(lines) == 1 and "interrupted (Ctrl-C)" in lines[0] and str(out) in lines[0]
    assert "6 jobs: 3 converged, 1 interrupted, 2 missing" in lines[0]
    rows = read_csv(out / "summary.csv")
    assert [r["status"] for r in rows] == ["converged", "converged", "converged", "interrupted", "missing", "missing"]
    interrupted = json.loads((out / "3" / "result.json").read_text())
    assert interrupted["steps"] > 1000 and len(interrupted["limit"]) == 3 and "Ctrl-C" in interrupted["message"]
    with np.load(out / "3" / "trajectory.npz") as trajectory:
        assert trajectory["step"][-1] == interrupted["steps"]
    for job in (4, 5):  # not run: Hydra's job files, no record
        assert (out / str(job) / ".hydra" / "overrides.yaml").exists() and not (out / str(job) / "result.json").exists()
    assert "dataset.theta0=[0,0,1]" in (out / "4" / ".hydra" / "overrides.yaml").read_text()
    assert (out / "summary.md").exists() and "Sweep summary" in stdout
