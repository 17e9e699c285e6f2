from __future__ import annotations

import json
import math

import numpy as np
import pytest

from implicit_bias.app import execute
from implicit_bias.results import atomic_write, failure_record, jsonable, write_json
from conftest import build_config, compose_config

REQUIRED = {
    "dataset", "optimizer", "schedule", "status", "message", "steps", "wall_time_s", "final_loss",
    "limit", "prediction", "prediction_source", "error", "verdict", "seed", "versions",
}


def test_execute_writes_all_records(tmp_path):
    record = execute(build_config(["optimizer=sign_sgd"]), tmp_path, ["optimizer=sign_sgd"])
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk == record
    assert REQUIRED <= set(record)
    assert record["schedule"] == {"name": "exponential", "lr": 0.1, "gamma": 0.95}
    assert record["overrides"] == ["optimizer=sign_sgd"]
    assert record["versions"]["numpy"] == np.__version__
    with np.load(tmp_path / "trajectory.npz") as npz:
        assert npz["theta"].shape == (len(npz["step"]), 3)
        assert npz["step"][0] == 0 and npz["step"][-1] == record["steps"]
        np.testing.assert_array_equal(npz["limit"], record["limit"])
        assert np.all(np.diff(npz["step"]) > 0)
    assert (tmp_path / "trajectory.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*.tmp"))


def test_trajectory_is_log_spaced():
    from implicit_bias.runner import log_spaced_steps

    steps = log_spaced_steps(100_000, 50)
    assert steps[0] == 0 and steps[-1] == 100_000
    assert list(steps[:11]) == list(range(11))
    per_decade = [np.sum((steps > 10**k) & (steps <= 10 ** (k + 1))) for k in range(1, 5)]
    assert all(40 <= c <= 50 for c in per_decade), per_decade


def test_a_blown_up_run_still_writes_strict_json(tmp_path):
    record = execute(build_config(["schedule.lr=1e300", "figure=false"]), tmp_path, [])
    text = (tmp_path / "result.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert record["status"] == "non_finite"
    assert record["verdict"] == "not_converged"


def test_failure_record_has_every_field():
    record = failure_record(compose_config(), ["schedule.lr=-1"], "invalid_config", "bad lr")
    assert REQUIRED <= set(record)
    assert record["status"] == "invalid_config" and record["limit"] is None
    json.dumps(record, allow_nan=False)


def test_jsonable_maps_non_finite_to_null():
    assert jsonable({"x": np.array([1.0, math.nan, math.inf]), "y": np.float64(2.5)}) == {"x": [1.0, None, None], "y": 2.5}


def test_atomic_write_replaces_whole_files_and_cleans_up_on_failure(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    with pytest.raises(ValueError):
        write_json(path, {"a": math.nan})  # refused before anything is written
    assert json.loads(path.read_text()) == {"a": 2}
    atomic_write(tmp_path / "sub" / "b.bin", b"xyz")
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"xyz"
    assert [p.name for p in tmp_path.rglob(".*")] == []
