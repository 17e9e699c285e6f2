"""The RMS-norm study: exact values, Monte Carlo estimates against them with tolerances derived
from the sample size, slopes, bad input, records and the command end to end.

Tolerances for Monte Carlo means (every seed is fixed, so each test is deterministic; the
probabilities say how unlikely a failure would be for a fresh seed if the code is right):

* ‖x‖₂ is a 1-Lipschitz function of x ~ N(0, I_d), so the mean of m independent draws obeys
  the Gaussian concentration inequality (Tsirelson–Ibragimov–Sudakov; Boucheron, Lugosi &
  Massart, *Concentration Inequalities*, Thm 5.6) P(|mean − E‖x‖₂| ≥ t) ≤ 2 exp(−m t²/2),
  for every d, with no normal approximation. With K grid points and t = √(2 ln(2K/δ)/m) all K
  hold together with probability ≥ 1 − δ (union bound); δ = 1e-6. ‖x‖_RMS = ‖x‖₂/√d is the
  same event scaled by 1/√d.
* ‖Wx‖²_RMS is not Lipschitz; there the tolerance is z·σ/√m with the exact σ and z the
  normal quantile for δ = 1e-6 over the grid (central limit theorem: approximate, as the
  product of two χ² variables has a heavy right tail at small d1, d2).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import tracemalloc

import numpy as np
import pytest
from scipy import integrate, special

from implicit_bias.params import ConfigError
from implicit_bias.studies import rms_norm as R
from conftest import compose_config, run_cli

DELTA = 1e-6  # false-failure probability allowed per test (union-bounded over its grid)
EPS = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def shipped() -> dict:
    """The validated parameters of conf/experiment/rms_norm.yaml, as the command sees them."""
    return R.parameters(compose_config(["experiment=rms_norm"]))


@pytest.fixture(scope="module")
def norm_rows(shipped) -> list[dict]:
    """The default experiment's norm estimates (d = 1 … 10⁵, its samples per d)."""
    grid = R.dimension_grid(shipped["d_min"], shipped["d_max"], shipped["points_per_decade"])
    return R.measure_norms(grid, shipped["samples"], shipped["confidence"], shipped["seed"])


def concentration_tol(m: int, k: int, delta: float = DELTA) -> float:
    """t with 2k·exp(−m t²/2) = δ: every one of k means of m draws of a 1-Lipschitz function of a
    standard Gaussian vector is within t of its expectation with probability ≥ 1 − δ."""
    return math.sqrt(2.0 * math.log(2.0 * k / delta) / m)


def normal_z(k: int, delta: float = DELTA) -> float:
    """Two-sided normal quantile for k simultaneous tests at total level δ."""
    return float(special.ndtri(1.0 - delta / (2.0 * k)))


# ---------------------------------------------------------------- the exact value


def test_exact_mean_known_values():
    # d = 1: E|z| = √(2/π); d = 2: Rayleigh mean √(π/2); d = 3: Maxwell mean 2√(2/π)
    assert R.expected_l2_norm(1) == pytest.approx(math.sqrt(2 / math.pi), rel=4 * EPS)
    assert R.expected_l2_norm(2) == pytest.approx(math.sqrt(math.pi / 2), rel=4 * EPS)
    assert R.expected_l2_norm(3) == pytest.approx(2 * math.sqrt(2 / math.pi), rel=4 * EPS)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 10, 30, 100, 299, 300, 301, 1000, 10_000])
def test_exact_mean_against_a_numerical_integral(d):
    # E‖x‖₂ = ∫ r^d e^{−r²/2} dr / ∫ r^{d−1} e^{−r²/2} dr (the chi density without its Γ constant);
    # both integrands scaled by their common peak, as r^d overflows for d > 300. quad's
    # absolute and relative tolerances are set to 1e-13, so 1e-11 on the ratio is loose.
    peak = math.sqrt(d)
    log_scale = (d - 1) * math.log(peak) - peak**2 / 2

    def density(r, power):
        return math.exp(power * math.log(r) - r * r / 2 - log_scale) if r > 0 else 0.0

    width = 12.0
    lo, hi = max(0.0, peak - width), peak + width  # the mass outside is below e^{−72}
    top = integrate.quad(density, lo, hi, args=(d,), epsabs=1e-13, epsrel=1e-13, points=[peak], limit=200)[0]
    bottom = integrate.quad(density, lo, hi, args=(d - 1,), epsabs=1e-13, epsrel=1e-13, points=[peak], limit=200)[0]
    assert R.expected_l2_norm(d) == pytest.approx(top / bottom, rel=1e-11)


def test_exact_mean_satisfies_its_identities_for_every_d_up_to_1e5():
    # Γ(d/2 + 1) = (d/2)Γ(d/2) gives E_d · E_{d+1} = d and E_{d+2} = E_d (d+1)/d. With E_1 = √(2/π)
    # these determine every E_d, so they check both branches and the switch at DIRECT_MAX_D.
    # Each value is accurate to a few ulp, so the identities hold to 8 eps (measured: 3 and 4).
    d = np.arange(1, 100_001, dtype=np.float64)
    e = R.expected_l2_norm(d)
    assert np.max(np.abs(e[:-1] * e[1:] / d[:-1] - 1)) <= 8 * EPS
    assert np.max(np.abs(e[2:] / e[:-2] * d[:-2] / (d[:-2] + 1) - 1)) <= 8 * EPS
    # the gammaln difference agrees to its own error bound 2·eps·(|lnΓ((d+1)/2)| + |lnΓ(d/2)|), ×4
    via_gammaln = math.sqrt(2) * np.exp(special.gammaln((d + 1) / 2) - special.gammaln(d / 2))
    bound = 8 * EPS * (np.abs(special.gammaln((d + 1) / 2)) + np.abs(special.gammaln(d / 2)) + 1)
    assert np.all(np.abs(via_gammaln / e - 1) <= bound)


def test_exact_mean_against_the_textbook_expansion_and_sqrt_d():
    # E‖x‖₂ = √d (1 − 1/(4d) + 1/(32d²) + 5/(128d³) + O(d⁻⁴)) (DLMF 5.11.13 with z = d/2);
    # the omitted term is −21/(2048 d⁴), so twice that bounds the difference for d ≥ 100.
    d = np.geomspace(100, 1e5, 40).round()
    expansion = np.sqrt(d) * (1 - 1 / (4 * d) + 1 / (32 * d**2) + 5 / (128 * d**3))
    assert np.all(np.abs(R.expected_l2_norm(d) / expansion - 1) <= 2 * 21 / (2048 * d**4) + 8 * EPS)
    assert np.all(R.expected_l2_norm(d) < np.sqrt(d))  # Jensen: E‖x‖ < √(E‖x‖²) = √d


def test_std_and_local_slope():
    d = np.array([1, 2, 10, 1000, 100_000])
    assert R.l2_norm_std(1) == pytest.approx(math.sqrt(1 - 2 / math.pi), rel=1e-14)
    assert np.all(np.diff(R.l2_norm_std(d)) > 0) and np.all(R.l2_norm_std(d) < math.sqrt(0.5))
    assert R.l2_norm_log_slope(1) == pytest.approx(math.log(2), rel=1e-14)  # (1/2)(ψ(1) − ψ(1/2)) = ln 2
    assert np.all(np.diff(R.l2_norm_log_slope(d)) < 0) and np.all(R.l2_norm_log_slope(d) > 0.5)


def test_matrix_moments_by_hand():
    # d1 = d2 = 1: ‖Wx‖² = (w x)² with w, x ~ N(0, 1) independent: E = 1, E[(wx)⁴] = 3·3, Var = 8
    mean, std = R.expected_wx_rms_sq(1, 1)
    assert float(mean) == 1.0 and float(std) ** 2 == pytest.approx(8.0, rel=1e-15)
    # d1 = 16, d2 = 4, W/4: E = 1; E‖x‖⁴ = 16·18, E Q² = 4·6, so Var = (288·24/16)/256 − 1
    mean, std = R.expected_wx_rms_sq(16, 4, 1 / 4)
    assert float(mean) == 1.0 and float(std) ** 2 == pytest.approx(288 * 24 / 16 / 256 - 1, rel=1e-14)


# ---------------------------------------------------------------- Monte Carlo against exact


def test_norm_estimates_within_the_concentration_bound(norm_rows, shipped):
    m = shipped["samples"]
    l2 = [r for r in norm_rows if r["quantity"] == "l2_norm"]
    assert [r["d"] for r in l2][0] == 1 and l2[-1]["d"] == 100_000 and len(l2) >= 20
    tol = concentration_tol(m, len(l2))  # P(a false failure) ≤ 1e-6 over the whole grid
    for r in l2:
        assert abs(r["estimate"] - r["exact"]) <= tol, r
        assert r["exact"] == R.expected_l2_norm(r["d"])
        assert r["ci_low"] < r["estimate"] < r["ci_high"]
    for r in norm_rows:
        if r["quantity"] == "rms_norm":  # the same event, scaled by 1/√d
            assert abs(r["estimate"] - r["exact"]) <= tol / math.sqrt(r["d"]), r
            assert abs(r["exact"] - 1) <= 0.21  # O(1): between √(2/π) and 1
    # the CIs cover about the stated fraction (a loose sanity check, not the criterion)
    covered = sum(r["ci_low"] <= r["exact"] <= r["ci_high"] for r in l2)
    assert covered >= len(l2) - 5


def test_the_same_tolerance_rejects_sqrt_d_at_small_d():
    # √d is the large-d approximation; at small d it is off by ≈ 1/(4√d). 200 000 samples per
    # d make the tolerance 0.013, so the test accepts the exact mean and rejects √d at each d.
    grid, m = [1, 2, 3, 5, 10], 200_000
    rows = [r for r in R.measure_norms(grid, m, 0.95, seed=7) if r["quantity"] == "l2_norm"]
    tol = concentration_tol(m, len(grid))
    for r in rows:
        assert abs(r["estimate"] - r["exact"]) <= tol
        assert abs(r["estimate"] - math.sqrt(r["d"])) > tol, r["d"]


def test_matrix_estimates_before_and_after_scaling(shipped):
    d1s, d2s, m = shipped["d1"], shipped["d2"], shipped["matrix_samples"]
    rows = R.measure_matrix(d1s, d2s, m, shipped["confidence"], shipped["seed"])
    assert len(rows) == 2 * len(d1s) * len(d2s)
    z = normal_z(len(d1s) * len(d2s))  # unscaled and scaled rows are one event per point
    for r in rows:
        mean, std = R.expected_wx_rms_sq(r["d1"], r["d2"], 1.0 if r["scaling"] == "none" else 1 / math.sqrt(r["d1"]))
        assert r["exact"] == (r["d1"] if r["scaling"] == "none" else 1.0) == mean
        assert abs(r["estimate"] - mean) <= z * std / math.sqrt(m), r


def test_a_wrong_scaling_fails_the_same_test():
    # W/d1 (E = 1/d1) and W/√d2 (E = d1/d2) in place of W/√d1; and no scaling, against 1
    d1s, d2s, m = [4, 16, 64], [1, 4, 16], 4000
    z = normal_z(len(d1s) * len(d2s))
    for d1 in d1s:
        for d2 in d2s:
            right, over, other = R.sample_wx_rms_sq(d1, d2, m, R.point_rng(3, 1, d1, d2),
                                                    (1 / math.sqrt(d1), 1 / d1, 1 / math.sqrt(d2)))
            _, std = R.expected_wx_rms_sq(d1, d2, 1 / math.sqrt(d1))
            tol = z * std / math.sqrt(m)
            assert abs(right.mean() - 1) <= tol
            assert abs(over.mean() - 1) > tol and abs(right.mean() * d1 - 1) > tol
            if d1 != d2:
                assert abs(other.mean() - 1) > tol


# ---------------------------------------------------------------- slopes


def test_slopes_match_the_exact_curve_and_the_asymptote(norm_rows, shipped):
    fit_d_min, m = shipped["fit_d_min"], shipped["samples"]
    slopes = R.fit_slopes(norm_rows, fit_d_min)
    l2, rms = slopes["l2_norm"], slopes["rms_norm"]
    # the exact curve's least-squares slope lies between the local slopes 1/2 (d → ∞) and at d_min
    assert 0.5 < l2["exact_slope"] <= float(R.l2_norm_log_slope(l2["d_min"]))
    # Monte Carlo against the exact fit: the slope is Σ w_i ln(mean_i), w_i = (u_i − ū)/Σ(u_j − ū)²,
    # u = ln d; on the concentration event |ln mean_i − ln E_i| ≤ t/(E_i − t), so the slopes
    # differ by at most Σ|w_i| · max_i t/(E_i − t) (probability ≥ 1 − 1e-6).
    points = [r for r in norm_rows if r["quantity"] == "l2_norm" and r["d"] >= fit_d_min]
    u = np.log([r["d"] for r in points])
    w = (u - u.mean()) / np.sum((u - u.mean()) ** 2)
    t = concentration_tol(m, len(points))
    bound = np.sum(np.abs(w)) * max(t / (r["exact"] - t) for r in points)
    assert abs(l2["slope"] - l2["exact_slope"]) <= bound
    assert abs(l2["slope"] - 0.5) <= bound + float(R.l2_norm_log_slope(l2["d_min"])) - 0.5
    # the RMS slope is the ℓ2 slope minus exactly 1/2 (the same samples divided by √d)
    assert rms["slope"] == pytest.approx(l2["slope"] - 0.5, abs=1e-12)
    assert rms["stderr"] == pytest.approx(l2["stderr"], rel=1e-9)
    assert 0 < l2["stderr"] < 0.01
    assert len(points) == l2["points"] and l2["d_min"] == points[0]["d"]
    # the same bound (0.0076 for the shipped grid) rejects a wrong power: fitting E‖x‖₂² (slope 1)
    # or E‖x‖₂^(1/2) (slope 1/4) in place of E‖x‖₂
    d = [r["d"] for r in points]
    for power in (2.0, 0.5):
        wrong = R.loglog_fit(d, [r["estimate"] ** power for r in points]).slope
        assert abs(wrong - l2["exact_slope"]) > bound


def test_fit_and_interval_helpers():
    d = np.array([1.0, 10.0, 100.0, 1000.0])
    fit = R.loglog_fit(d, 3 * d**0.25)
    assert fit.slope == pytest.approx(0.25, abs=1e-14) and fit.stderr < 1e-14
    assert math.exp(fit.intercept) == pytest.approx(3, rel=1e-13)
    samples = np.random.default_rng(0).standard_normal(50)
    est = R.mean_ci(samples, 0.9)
    from scipy import stats
    low, high = stats.t.interval(0.9, 49, loc=samples.mean(), scale=stats.sem(samples))
    assert (est.low, est.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))


# ---------------------------------------------------------------- sampling: chunks, seeds, grid


def test_chunked_sampling_gives_the_same_draws_and_bounded_memory(monkeypatch):
    whole = R.sample_l2_norms(1000, 40, np.random.default_rng(1))
    monkeypatch.setattr(R, "CHUNK_ELEMENTS", 2500)  # two rows per chunk
    assert np.array_equal(R.sample_l2_norms(1000, 40, np.random.default_rng(1)), whole)
    monkeypatch.undo()
    tracemalloc.start()
    R.sample_l2_norms(100_000, 60, np.random.default_rng(2))  # 48 MB if drawn at once
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 2.5 * 8 * R.CHUNK_ELEMENTS


def test_a_points_draws_do_not_depend_on_the_grid():
    alone = R.measure_norms([10], 300, 0.95, seed=5)
    among = R.measure_norms([1, 10, 100], 300, 0.95, seed=5)
    assert alone == among[2:4]
    assert R.measure_norms([10], 300, 0.95, seed=6)[0]["estimate"] != alone[0]["estimate"]


def test_dimension_grid():
    grid = R.dimension_grid(1, 100_000, 4)
    assert grid[0] == 1 and grid[-1] == 100_000 and grid == sorted(set(grid))
    assert len(grid) == 21 and 10 in grid and 1000 in grid
    assert R.dimension_grid(7, 7, 3) == [7]


# ---------------------------------------------------------------- bad input


def block(**changes):
    values = dict(compose_config(["experiment=rms_norm"])["rms_norm"], **changes)
    return {"rms_norm": values}


BAD = {
    "samples": ({"samples": 1}, "'samples'"),
    "confidence": ({"confidence": 1.5}, "'confidence'"),
    "d1 zero": ({"d1": [0, 4]}, "'d1'"),
    "d2 repeated": ({"d2": [4, 4]}, "'d2'"),
    "d1 not a list": ({"d1": 4}, "'d1'"),
    "d_max below d_min": ({"d_min": 100, "d_max": 10}, "'d_max'"),
    "fit leaves too few points": ({"fit_d_min": 50_000}, "'fit_d_min'"),
    "matrix too large": ({"d1": [4096], "d2": [4096]}, "'d1' and 'd2'"),
    "seed": ({"seed": -1}, "'seed'"),
    "figure": ({"figure": "yes"}, "'figure'"),
    "typo": ({"sample": 10}, "'sample'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_naming_the_parameter(case, tmp_path):
    changes, name = BAD[case]
    with pytest.raises(ConfigError) as info:
        R.run(block(**changes), tmp_path)
    message = str(info.value)
    assert "\n" not in message and name in message and "rms_norm" in message
    assert "Got" in message or "Unknown" in message
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_missing_block_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'rms_norm' block"):
        R.run({"study": "rms_norm"}, tmp_path)


# ---------------------------------------------------------------- records


SMALL = dict(d_min=1, d_max=100, points_per_decade=2, samples=200, fit_d_min=1, d1=[1, 4], d2=[1, 4],
             matrix_samples=200, confidence=0.9, seed=0)


def test_records_are_written_and_a_failing_figure_only_warns(tmp_path, monkeypatch, caplog):
    reference = R.run(block(**SMALL, figure=False), tmp_path / "plain")

    def broken(record):
        raise RuntimeError("no display")

    monkeypatch.setattr(R, "draw_matrix", broken)
    with caplog.at_level(logging.WARNING, logger="implicit_bias"):
        record = R.run(block(**SMALL, figure=True), tmp_path / "broken")
    assert "figures could not be drawn" in caplog.text and "no display" in caplog.text
    for name in (R.RESULT_FILE, R.SUMMARY_FILE):
        assert (tmp_path / "broken" / name).exists()
    on_disk = json.loads((tmp_path / "broken" / R.RESULT_FILE).read_text())
    assert on_disk == record
    strip = lambda r: {k: v for k, v in r.items() if k not in ("wall_time_s", "parameters")}  # noqa: E731
    assert strip(on_disk) == strip(reference)
    assert (tmp_path / "broken" / R.SUMMARY_FILE).read_bytes() == (tmp_path / "plain" / R.SUMMARY_FILE).read_bytes()
    assert not list((tmp_path / "broken").glob(".*.tmp"))


def test_record_contents(tmp_path):
    record = R.run(block(**SMALL, figure=False), tmp_path)
    assert record["study"] == "rms_norm" and record["parameters"]["samples"] == 200
    assert record["versions"]["numpy"] == np.__version__
    assert set(record["slopes"]) == {"l2_norm", "rms_norm"}
    grid = R.dimension_grid(1, 100, 2)
    assert record["d_grid"] == grid and len(record["estimates"]) == 2 * len(grid) + 2 * 4
    for r in record["estimates"]:
        assert set(r) == set(R.CSV_COLUMNS)
        assert r["z_score"] == pytest.approx((r["estimate"] - r["exact"]) / (r["sample_std"] / math.sqrt(r["samples"])))
    rows = list(csv.DictReader(io.StringIO((tmp_path / R.SUMMARY_FILE).read_text())))
    assert len(rows) == len(record["estimates"])
    assert [float(r["estimate"]) for r in rows] == [r["estimate"] for r in record["estimates"]]


# ---------------------------------------------------------------- the command


@pytest.mark.slow
def test_command_end_to_end(tmp_path):
    out = tmp_path / "run"
    args = ["experiment=rms_norm", f"hydra.run.dir={out}", *(f"rms_norm.{k}={v}" for k, v in SMALL.items())]
    proc = run_cli([a.replace(" ", "") for a in args], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "result.json").read_text())
    assert record["study"] == "rms_norm" and record["parameters"]["d1"] == [1, 4]
    assert "rms_norm.samples=200" in record["overrides"]
    assert len(list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))) == len(record["estimates"])
    for name in R.FIGURES.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    assert "| d " in proc.stdout and "E‖x‖_RMS" in proc.stdout and "log-log slope" in proc.stdout


@pytest.mark.slow
def test_command_bad_input_exits_2_with_one_line(tmp_path):
    proc = run_cli(["experiment=rms_norm", "rms_norm.confidence=2", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["implicit-bias: error: The 'confidence' parameter of study 'rms_norm' must be a float in (0, 1). "
                     "Got 2 instead."]
    assert not (tmp_path / "run" / "result.json").exists()
