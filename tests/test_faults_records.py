"""Faults around records: each is one line on stderr, never a traceback, says what was kept
and where, and loses no record that was already written."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from implicit_bias import results, summary
from implicit_bias.results import DamagedFile, RecordWriteError, read_record, read_trajectory, write_json
from conftest import run_cli

# a run that takes minutes: signSGD with a constant rate never converges
LONG = ["max_steps=100000000", "optimizer=sign_sgd", "schedule=constant", "check_every=1", "figure=false"]


def environment() -> dict[str, str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def error_lines(proc) -> list[str]:
    """The non-empty lines of stderr; the faults here must leave exactly one."""
    return [line for line in proc.stderr.splitlines() if line.strip()]


def one_line(proc) -> str:
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("implicit-bias: error: "), lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def start(args: list[str], cwd: Path, script: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", "implicit_bias"]
    return subprocess.Popen([*command, *args], cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the command ended before {path} appeared:\n{proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_script(code: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The command through a script that patches the package first (a fault to simulate)."""
    script = cwd / "patched.py"
    script.write_text(textwrap.dedent(code) + textwrap.dedent("""
        from implicit_bias.app import main
        sys.argv = ["implicit-bias", *sys.argv[1:]]
        main()
    """))
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=environment(), capture_output=True,
                          text=True, timeout=180)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
def test_ctrl_c_in_a_single_run_keeps_its_record_as_interrupted(tmp_path):
    out = tmp_path / "run"
    proc = start([*LONG, f"hydra.run.dir={out}"], tmp_path)
    wait_for(out / ".hydra" / "config.yaml", proc)
    time.sleep(1.5)  # well inside the loop
    proc.send_signal(signal.SIGINT)
    done = finish(proc)
    assert done.returncode == 130, done.stderr
    line = one_line(done)
    assert line.startswith("implicit-bias: error: interrupted (Ctrl-C) at step ")
    assert line.endswith(f"kept trajectory.npz and result.json in {out} (status interrupted, the iterate reached)")
    record = json.loads((out / "result.json").read_text())
    assert record["status"] == "interrupted" and record["verdict"] == "not_converged"
    assert "interrupted" in record["message"] and f"at step {record['steps']}" in line
    assert record["steps"] > 100 and all(np.isfinite(record["limit"]))
    with np.load(out / "trajectory.npz") as npz:
        assert npz["step"][-1] == record["steps"]
        np.testing.assert_array_equal(npz["limit"], record["limit"])
        np.testing.assert_array_equal(npz["theta"][-1], record["limit"])
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_ctrl_c_in_a_multirun_keeps_the_finished_jobs_and_summarizes_them(tmp_path):
    sweep = tmp_path / "sweep"
    # jobs 0 and 1 stop after 100 steps; job 2 runs until interrupted; job 3 never starts
    args = ["-m", "max_steps=100,100000000", "schedule.lr=0.1,0.05", *LONG[1:], f"hydra.sweep.dir={sweep}"]
    proc = start(args, tmp_path)
    wait_for(sweep / "2" / ".hydra" / "config.yaml", proc)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    done = finish(proc)
    assert done.returncode == 130, done.stderr
    line = one_line(done)
    assert line.startswith("implicit-bias: error: interrupted (Ctrl-C); the sweep stopped: kept the records in ")
    assert f"wrote their summary to {sweep / 'summary.md'}" in line and "3 jobs: 2 max_steps, 1 interrupted" in line
    rows = read_csv(sweep / "summary.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2"]
    assert [r["status"] for r in rows] == ["max_steps", "max_steps", "interrupted"]
    assert json.loads((sweep / "0" / "result.json").read_text())["steps"] == 100
    assert not (sweep / "3").exists()
    assert "| interrupted" in done.stdout


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_leaves_no_partial_file_and_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    write_json(path, {"a": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results.os, "fsync", full)
    with pytest.raises(RecordWriteError) as caught:
        write_json(path, {"a": 2})
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert str(caught.value) == f"could not write {path}: no space left on device (ENOSPC); no partial file was left"
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # the temporary file is gone


@pytest.mark.slow
def test_a_full_disk_in_a_single_run_is_one_line_and_says_what_was_kept(tmp_path):
    out = tmp_path / "run"
    proc = run_script("""
        import errno, os, sys
        import implicit_bias.results as results

        class FullAfterOneFile:  # os, but the second file's fsync finds the disk full
            calls = 0

            def __getattr__(self, name):
                return getattr(os, name)

            def fsync(self, fd):
                FullAfterOneFile.calls += 1
                if FullAfterOneFile.calls == 2:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)

        results.os = FullAfterOneFile()
    """, ["figure=false", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc) == (f"implicit-bias: error: could not write {out / 'result.json'}: no space left on device "
                              f"(ENOSPC); no partial file was left; kept trajectory.npz in {out}")
    assert not (out / "result.json").exists() and not list(out.glob(".*.tmp"))
    with np.load(out / "trajectory.npz") as npz:
        assert npz["theta"].shape[1] == 3


# ---------------------------------------------------------------- output directories


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["-r", "-m"])
def test_an_output_directory_that_is_a_file_or_under_one_is_one_line(tmp_path, mode):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    key = "hydra.run.dir" if mode == "-r" else "hydra.sweep.dir"
    extra = ["-m"] if mode == "-m" else []
    proc = run_cli([*extra, "figure=false", f"{key}={blocker}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert one_line(proc) == (f"implicit-bias: error: the output directory {blocker} is a file, not a directory; "
                              f"choose another {key}")
    proc = run_cli([*extra, "figure=false", f"{key}={blocker / 'sub' / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert one_line(proc) == (f"implicit-bias: error: the output directory {blocker / 'sub' / 'run'} lies under a file "
                              f"({blocker} is a file), so it cannot be created; choose another {key}")
    assert blocker.read_text() == "not a directory"


def test_a_read_only_output_directory_is_named(tmp_path, monkeypatch):
    """Simulated (root writes anywhere): the probe file cannot be created."""
    target = tmp_path / "read_only"
    target.mkdir()

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(results.tempfile, "TemporaryFile", denied)
    assert results.output_dir_problem(target) == (f"the output directory {target} is not writable: "
                                                  f"permission denied (EACCES)")
    with pytest.raises(results.OutputDirError, match="choose another hydra.run.dir"):
        summary.claim_run_dir(target, ".hydra")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions; simulated in the test above")
def test_a_read_only_output_directory_is_one_line(tmp_path):
    target = tmp_path / "read_only"
    target.mkdir()
    target.chmod(0o555)
    try:
        proc = run_cli(["figure=false", f"hydra.run.dir={target}"], cwd=tmp_path)
    finally:
        target.chmod(0o755)
    assert proc.returncode == 2
    assert one_line(proc) == (f"implicit-bias: error: the output directory {target} is not writable: permission "
                              f"denied (EACCES); choose another hydra.run.dir")


@pytest.mark.slow
def test_a_second_run_into_the_same_directory_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    first = run_cli(["figure=false", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = run_cli(["figure=false", "optimizer=sign_sgd", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert second.returncode == 2
    assert one_line(second) == (f"implicit-bias: error: the run directory {out} already holds a record (result.json); "
                                f"choose another hydra.run.dir")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_run_directory_claimed_by_another_run_is_refused(tmp_path):
    """A run that started there and has not written its record yet (or failed) holds .hydra/;
    the claim is an atomic mkdir, so of two runs started at once exactly one proceeds."""
    out = tmp_path / "run"
    summary.claim_run_dir(out, ".hydra")
    assert (out / ".hydra").is_dir()
    with pytest.raises(results.OutputDirError) as caught:
        summary.claim_run_dir(out, ".hydra")
    assert str(caught.value) == (f"the run directory {out} already holds another run (.hydra/, a run started there "
                                 f"before); choose another hydra.run.dir")


@pytest.mark.slow
def test_a_second_sweep_into_the_same_directory_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_cli(["-m", "optimizer=sgd,sign_sgd", "figure=false", "sweep_figures=false", f"hydra.sweep.dir={sweep}"],
                    cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    records = (sweep / "0" / "result.json").read_bytes()
    again = run_cli(["-m", "optimizer=adam", "figure=false", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert again.returncode == 2
    assert one_line(again) == (f"implicit-bias: error: the sweep directory {sweep} already holds another sweep "
                               f"(0/, 1/); choose another hydra.sweep.dir")
    assert (sweep / "0" / "result.json").read_bytes() == records


# ---------------------------------------------------------------- damaged job directories


def test_damaged_files_read_back_as_one_clear_reason(tmp_path):
    path = tmp_path / "result.json"
    for content, reason in [(b"", "result.json is empty"), (b'{"status": "conv', "result.json is not valid JSON"),
                            (b"[1, 2]", "result.json holds a JSON list, not a record"),
                            (b'{"status": "converged"}', "result.json is not a complete record (missing or wrong: ")]:
        path.write_bytes(content)
        with pytest.raises(DamagedFile, match=reason.replace("(", r"\(")):
            read_record(path)
    npz = tmp_path / "trajectory.npz"
    npz.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DamagedFile, match="trajectory.npz cannot be read: BadZipFile"):
        read_trajectory(npz)
    np.savez(npz, step=np.arange(3), theta=np.zeros((2, 3)), loss=np.zeros(3), limit=np.zeros(3))
    with pytest.raises(DamagedFile, match="inconsistent shapes"):
        read_trajectory(npz)


@pytest.fixture(scope="module")
def damaged_sweep(tmp_path_factory):
    """A real four-job sweep, then: job 0's result.json truncated, job 1's emptied, job 2's
    trajectory.npz corrupted, job 3's result.json removed and its .hydra/config.yaml truncated."""
    tmp = tmp_path_factory.mktemp("damaged")
    sweep = tmp / "sweep"
    proc = run_cli(["-m", "schedule.lr=0.1,0.2,0.3,0.4", "figure=false", "sweep_figures=false",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    text = (sweep / "0" / "result.json").read_bytes()
    (sweep / "0" / "result.json").write_bytes(text[: len(text) // 2])
    (sweep / "1" / "result.json").write_bytes(b"")
    npz = (sweep / "2" / "trajectory.npz").read_bytes()
    (sweep / "2" / "trajectory.npz").write_bytes(npz[: len(npz) // 3])
    (sweep / "3" / "result.json").unlink()
    config = (sweep / "3" / ".hydra" / "config.yaml").read_text()
    (sweep / "3" / ".hydra" / "config.yaml").write_text(config[: config.index("schedule:")])  # still parses
    for name in ("summary.csv", "summary.md"):
        (sweep / name).unlink()
    return sweep


def check_damage_rows(sweep: Path, printed: str) -> None:
    rows = read_csv(sweep / "summary.csv")
    assert [r["status"] for r in rows] == ["damaged", "damaged", "converged", "missing"]
    assert rows[0]["message"].startswith("result.json is not valid JSON (truncated?)")
    assert rows[0]["optimizer"] == "sgd" and rows[0]["schedule.lr"] == "0.1"  # from the job's .hydra files
    assert rows[1]["message"] == "result.json is empty"
    assert "trajectory.npz cannot be read" in rows[2]["message"] and rows[2]["verdict"] == "match"
    assert rows[2]["steps_within_tol"] == ""
    assert ".hydra/config.yaml is damaged" in rows[3]["message"] and rows[3]["schedule.lr"] == "0.4"
    assert "4 jobs: 2 damaged, 1 converged, 1 missing" in printed
    assert "damaged: job 2: trajectory.npz cannot be read" in printed
    assert "damaged: job 0: result.json is not valid JSON" in (sweep / "summary.md").read_text()


def test_damaged_jobs_are_rows_in_implicit_bias_summarize(damaged_sweep, capsys):
    assert summary.main([str(damaged_sweep)]) == 0
    check_damage_rows(damaged_sweep, capsys.readouterr().out)
    assert (damaged_sweep / "sweep_trajectories.png").exists()


def test_damaged_jobs_are_rows_in_the_sweep_callbacks_summary(damaged_sweep, capsys):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(damaged_sweep)}}, "sweep_figures": False})
    summary.SummaryCallback().on_multirun_end(config)
    check_damage_rows(damaged_sweep, capsys.readouterr().out)


# ---------------------------------------------------------------- errors that are not bad input

BREAK_FACTORY = """
    import sys
    from implicit_bias.params import Spec
    from implicit_bias.problems import DATASETS

    spec = DATASETS["single_equation"]

    def strange(a, b, theta0):
        if b == 2.0:  # as numpy might on strange data
            raise ValueError("array must not contain infs or NaNs")
        return spec.factory(a, b, theta0)

    DATASETS["single_equation"] = Spec(strange, spec.params)
"""


@pytest.mark.slow
def test_a_factory_error_in_a_plain_sweep_is_that_jobs_error_record(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_script(BREAK_FACTORY, ["-m", "dataset.b=1,2,3", "figure=false", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = read_csv(sweep / "summary.csv")
    assert [r["status"] for r in rows] == ["converged", "error", "converged"]
    assert rows[1]["message"] == "ValueError: array must not contain infs or NaNs"
    assert "3 jobs: 2 converged, 1 error" in proc.stdout


@pytest.mark.slow
def test_a_factory_error_in_a_single_run_is_one_line(tmp_path):
    proc = run_script(BREAK_FACTORY, ["dataset.b=2", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 1
    assert one_line(proc) == ("implicit-bias: error: unexpected ValueError: array must not contain infs or NaNs while "
                              f"building the run; nothing was written to {tmp_path / 'run'} "
                              "(set HYDRA_FULL_ERROR=1 for the traceback)")


@pytest.mark.slow
@pytest.mark.parametrize("value, reason", [
    ("${oc.env:IMPLICIT_BIAS_UNSET_VARIABLE}", "Environment variable 'IMPLICIT_BIAS_UNSET_VARIABLE' not found"),
    ("${schedule.lr}", "Recursive interpolation detected"),
])
def test_an_interpolation_that_does_not_resolve_is_one_line(tmp_path, value, reason):
    proc = run_cli([f"schedule.lr={value}", "figure=false", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2
    line = one_line(proc)
    assert line.startswith("implicit-bias: error: The value of 'schedule.lr' does not resolve: ") and reason in line
    assert not (tmp_path / "run" / "result.json").exists()


# ---------------------------------------------------------------- a killed parallel worker


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_joblib_worker_still_gets_the_sweep_summarized(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    # jobs 0 and 1 stop after 100 steps; jobs 2 and 3 run until their workers end
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "max_steps=100,100000000",
            "schedule.lr=0.1,0.05", *LONG[1:], f"hydra.sweep.dir={sweep}"]
    proc = start(args, tmp_path)
    wait_for(sweep / "3" / ".hydra" / "config.yaml", proc)
    wait_for(sweep / "1" / "result.json", proc)
    time.sleep(1.0)
    workers = [c for c in children(proc.pid)
               if "popen_loky" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    done = finish(proc)
    assert done.returncode == 1, done.stderr
    line = one_line(done)
    assert line.startswith("implicit-bias: error: a worker process of the joblib launcher was killed "
                           "(TerminatedWorkerError); the sweep stopped: kept the records in ")
    assert f"wrote their summary to {sweep / 'summary.md'}" in line
    rows = read_csv(sweep / "summary.csv")
    assert [r["status"] for r in rows] == ["max_steps", "max_steps", "missing", "missing"]
    assert [r["max_steps"] for r in rows] == ["100", "100", "100000000", "100000000"]
    assert all(Path(f"/proc/{w}").exists() is False or "zombie" in Path(f"/proc/{w}/status").read_text().lower()
               for w in workers), "a worker outlived the sweep"


def test_a_full_disk_when_the_summary_is_written_is_one_line(damaged_sweep, monkeypatch, capsys):
    def full(path, data):
        raise RecordWriteError(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    monkeypatch.setattr(summary, "atomic_write", full)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(damaged_sweep)}}, "sweep_figures": False})
    with pytest.raises(SystemExit) as caught:
        summary.SummaryCallback().on_multirun_end(config)
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"implicit-bias: error: the job records in {damaged_sweep} are kept, but their summary could not be written: "
        f"could not write {damaged_sweep / 'summary.csv'}: no space left on device (ENOSPC); no partial file was left"]
    assert summary.main([str(damaged_sweep)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"implicit-bias-summarize: error: the summary of {damaged_sweep} could not be written: could not write "
        f"{damaged_sweep / 'summary.csv'}: no space left on device (ENOSPC); no partial file was left"]
