from __future__ import annotations

import math

import numpy as np
import pytest

from implicit_bias import schedules as S

T = np.array([0, 1, 3, 9, 10, 25, 50, 100, 200])

CASES = [
    # (schedule, values at T written out from each formula)
    (S.constant(0.1), [0.1] * 9),
    (S.inverse_time(0.1, 1.0), [0.1 / (1 + t) for t in T]),
    (S.inverse_time(1.0, 10.0), [1.0 / (1 + t / 10) for t in T]),
    (S.inverse_sqrt(0.1, 1.0), [0.1 / math.sqrt(1 + t) for t in T]),
    (S.exponential(0.1, 0.5), [0.1 * 0.5**t for t in T]),
    (S.step(0.1, 0.5, 10), [0.1, 0.1, 0.1, 0.1, 0.05, 0.025, 0.1 / 32, 0.1 / 1024, 0.1 / 2**20]),
    (S.cosine(1.0, 100, 0.0), [(1 + math.cos(math.pi * min(t, 100) / 100)) / 2 for t in T]),
    (S.cosine(2.0, 100, 0.1), [2.0 * (0.1 + 0.9 * (1 + math.cos(math.pi * min(t, 100) / 100)) / 2) for t in T]),
]


@pytest.mark.parametrize("schedule, expected", CASES)
def test_schedule_values(schedule, expected):
    got = schedule(T)
    assert got.dtype == np.float64 and got.shape == T.shape
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)


def test_spot_values():
    assert S.inverse_time(0.1, 1.0)(np.array([9]))[0] == pytest.approx(0.01, rel=1e-15)
    assert S.inverse_sqrt(0.1, 1.0)(np.array([3]))[0] == pytest.approx(0.05, rel=1e-15)
    assert S.cosine(1.0, 100, 0.0)(np.array([50]))[0] == pytest.approx(0.5, rel=1e-15)
    assert S.cosine(1.0, 100, 0.0)(np.array([100, 1000])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("name", sorted(S.SCHEDULES))
def test_every_schedule_starts_at_lr(name):
    spec = S.SCHEDULES[name]
    assert "lr" in spec.params
    params = {"lr": 0.37, "decay_steps": 7, "gamma": 0.9, "factor": 0.5, "every": 3, "final_fraction": 0.2}
    schedule = spec.factory(**{k: params[k] for k in spec.params})
    assert schedule(np.array([0]))[0] == pytest.approx(0.37, rel=1e-15)


@pytest.mark.parametrize("name", sorted(S.SCHEDULES))
def test_every_schedule_is_positive_and_non_increasing(name):
    spec = S.SCHEDULES[name]
    params = {"lr": 0.1, "decay_steps": 5, "gamma": 0.9, "factor": 0.5, "every": 3, "final_fraction": 0.1}
    values = spec.factory(**{k: params[k] for k in spec.params})(np.arange(2000))
    assert np.all(values > 0) or name == "exponential"  # γ^t underflows to 0 eventually
    assert np.all(np.diff(values) <= 0)
