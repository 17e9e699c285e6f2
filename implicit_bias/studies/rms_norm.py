"""The RMS norm ‖x‖_RMS = ‖x‖₂/√d: Monte Carlo estimates checked against exact values.

Three parts, each written into the run directory by :func:`run`:

1. **Norms of Gaussian vectors.** For x with i.i.d. N(0, 1) entries, ‖x‖₂ follows the chi
   distribution with d degrees of freedom, so

   .. math:: E‖x‖₂ = √2 Γ((d+1)/2) / Γ(d/2),   Var‖x‖₂ = d − (E‖x‖₂)²,

   and E‖x‖₂ = √d (1 − 1/(4d) + O(d⁻²)) grows like √d while E‖x‖_RMS = E‖x‖₂/√d → 1 stays
   O(1). The study estimates both over a log-spaced grid of d (1 to 10⁵ by default), gives each
   estimate a Student t confidence interval and a z-score against the exact value, and fits
   the log-log slopes (≈ 1/2 and ≈ 0).
2. **A Gaussian matrix applied to a Gaussian vector.** For y = Wx, W (d2 × d1) with i.i.d.
   N(0, 1) entries and x ~ N(0, I_{d1}) independent: given x, y ~ N(0, ‖x‖² I_{d2}), so
   ‖y‖² = ‖x‖² Q with Q ~ χ²_{d2} independent of ‖x‖² ~ χ²_{d1}. Hence

   .. math:: E‖y‖²_RMS = d1,   E‖y‖⁴_RMS = (d1² + 2 d1)(1 + 2/d2),

   and W/√d1 gives E‖y‖²_RMS = 1 whatever d1 and d2. The study estimates both over a
   (d1, d2) grid by sampling W and x themselves.
3. **Unit balls** of ℓ2, RMS, ℓ1 and ℓ∞ in two dimensions (a figure; the RMS ball is the
   ℓ2 ball of radius √2 there).

Sources: the chi distribution's moments (Johnson, Kotz & Balakrishnan, *Continuous
Univariate Distributions*, vol. 1, 2nd ed., ch. 18); the expansion of Γ(n + 1/2)/Γ(n)
(NIST DLMF §5.11, eqs. 5.11.8 and 5.11.13); the RMS norm as the
natural norm of activations (Bernstein & Newhouse, "Modular duality in deep learning", 2024).

Records: ``result.json`` (parameters, every estimate, the slopes, package versions),
``summary.csv`` (one row per estimate) and the figures ``rms_norm_norms.png``,
``rms_norm_matrix.png`` and ``rms_norm_balls.png``. Records are written first and atomically;
a failing figure is logged as a warning and leaves the records as they are.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import special, stats

from ..params import Boolean, ConfigError, Integer, Real, validate
from ..results import atomic_write, jsonable, package_versions, write_json

log = logging.getLogger("implicit_bias")

STUDY = "rms_norm"
RESULT_FILE, SUMMARY_FILE = "result.json", "summary.csv"
FIGURES = {"norms": "rms_norm_norms.png", "matrix": "rms_norm_matrix.png", "balls": "rms_norm_balls.png"}

#: float64 entries drawn at once: 8 MiB, so memory stays bounded at any d (d = 10⁵ takes
#: 10 samples per chunk); large enough that numpy's per-call overhead is negligible.
CHUNK_ELEMENTS = 1 << 20
#: largest d1·d2: one sample's W alone is d1·d2 float64 (32 MiB here).
MAX_MATRIX_ELEMENTS = 1 << 22
#: RNG stream labels, so each grid point's draws depend only on (seed, part, dimensions)
#: and not on which other points are in the grid.
_NORMS, _MATRIX = 0, 1

CI_METHOD = ("Student t interval: mean ± t_{m−1, (1+c)/2} · s/√m, with s the sample standard deviation "
             "(ddof = 1), m the number of samples and c the confidence level")
Z_SCORE = "(estimate − exact) / (s/√m)"


@dataclass(frozen=True)
class Dimensions:
    """A non-empty list of distinct ints in [1, high], returned sorted (a grid axis)."""

    high: int

    def describe(self) -> str:
        return f"a non-empty list of distinct ints in [1, {self.high}]"

    def check(self, value: Any) -> list[int]:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or not value:
            raise TypeError
        checked = [Integer(1, self.high).check(v) for v in value]
        if len(set(checked)) != len(checked):
            raise ValueError
        return sorted(checked)


#: the ``rms_norm`` block of the config (conf/experiment/rms_norm.yaml explains each key)
PARAMS = {
    "d_min": Integer(1, 10**6),
    "d_max": Integer(1, 10**6),
    "points_per_decade": Integer(1, 100),
    "samples": Integer(2, 10**7),
    "fit_d_min": Integer(1, 10**6),
    "d1": Dimensions(MAX_MATRIX_ELEMENTS),
    "d2": Dimensions(MAX_MATRIX_ELEMENTS),
    "matrix_samples": Integer(2, 10**7),
    "confidence": Real(0.0, 1.0),
    "seed": Integer(0),
    "figure": Boolean(),
}


# ---------------------------------------------------------------- exact values


#: below this d the Gamma ratio is taken directly (Γ(d/2) is finite up to d ≈ 343); from it on,
#: by its asymptotic series, whose first omitted term is below 1e-22 there
DIRECT_MAX_D = 300


def expected_l2_norm(d: Any) -> np.ndarray:
    """E‖x‖₂ for x ~ N(0, I_d): the mean of the chi distribution with d degrees of freedom.

    .. math:: E‖x‖₂ = √2 · Γ((d+1)/2) / Γ(d/2)

    For d ≤ ``DIRECT_MAX_D`` the ratio is taken directly (``scipy.special.gamma``, no overflow
    there). Above, Γ(d/2) overflows and a difference of ``gammaln`` would lose up to
    2·eps·|ln Γ(d/2)| (4e-11 relative at d = 10⁵), so the ratio comes from its asymptotic
    series (DLMF 5.11.8 with h = 1/2 minus h = 0; the coefficients are
    B_{2j}(2^{1−2j} − 2)/(2j(2j−1)), B the Bernoulli numbers), with n = d/2:

    .. math:: ln(Γ(n + 1/2)/Γ(n)) = ½ ln n − 1/(8n) + 1/(192n³) − 1/(640n⁵) + 17/(14336n⁷) − …

    so that E‖x‖₂ = √d · exp(−1/(8n) + 1/(192n³) − 1/(640n⁵) + 17/(14336n⁷)) with a
    truncation error below 1e-22 for n ≥ 150: the result is accurate to a few ulp for every d.
    Known values: √(2/π) at d = 1, √(π/2) at d = 2; E‖x‖₂ · E‖x'‖₂ = d for x' ~ N(0, I_{d+1})
    (since Γ(d/2 + 1) = (d/2) Γ(d/2)); E‖x‖₂ = √d (1 − 1/(4d) + 1/(32d²) + O(d⁻³)).
    Source: Johnson, Kotz & Balakrishnan (1994), *Continuous Univariate Distributions* 1, ch. 18.

    Parameters
    ----------
    d : int or array of int
        Dimensions, each ≥ 1.

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``d``.
    """
    d = np.asarray(d, dtype=np.float64)
    direct = d <= DIRECT_MAX_D
    small = np.where(direct, d, 1.0)
    n = np.where(direct, DIRECT_MAX_D, d) / 2.0
    series = np.sqrt(2.0 * n) * np.exp(-1.0 / (8.0 * n) + 1.0 / (192.0 * n**3) - 1.0 / (640.0 * n**5)
                                       + 17.0 / (14336.0 * n**7))
    return np.where(direct, math.sqrt(2.0) * special.gamma((small + 1.0) / 2.0) / special.gamma(small / 2.0), series)


def l2_norm_std(d: Any) -> np.ndarray:
    """The standard deviation of ‖x‖₂ for x ~ N(0, I_d): √(d − (E‖x‖₂)²), since E‖x‖₂² = d.

    It increases with d from √(1 − 2/π) ≈ 0.603 at d = 1 towards 1/√2 and stays below 1/√2.
    """
    d = np.asarray(d, dtype=np.float64)
    return np.sqrt(d - expected_l2_norm(d) ** 2)


def l2_norm_log_slope(d: Any) -> np.ndarray:
    """The local log-log slope d ln E‖x‖₂ / d ln d = (d/2)(ψ((d+1)/2) − ψ(d/2)), ψ = digamma.

    It decreases from ln 2 ≈ 0.693 at d = 1 towards 1/2 (as 1/2 + 1/(4d)); a least-squares
    slope of ln E‖x‖₂ against ln d over points d ≥ d_min lies between 1/2 and its value at
    d_min.
    """
    d = np.asarray(d, dtype=np.float64)
    return d / 2.0 * (special.digamma((d + 1.0) / 2.0) - special.digamma(d / 2.0))


def expected_wx_rms_sq(d1: Any, d2: Any, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ‖s·W x‖²_RMS = s²‖Wx‖²/d2 (W: d2 × d1, all entries N(0, 1)).

    ‖Wx‖² = ‖x‖² Q with ‖x‖² ~ χ²_{d1} and Q ~ χ²_{d2} independent, so

    .. math:: E = s² d1,   Var = s⁴ [(d1² + 2 d1)(1 + 2/d2) − d1²].

    ``scale = 1/√d1`` gives mean 1 for every d1 and d2.
    """
    d1 = np.asarray(d1, dtype=np.float64)
    d2 = np.asarray(d2, dtype=np.float64)
    mean = scale**2 * d1
    var = scale**4 * ((d1**2 + 2.0 * d1) * (1.0 + 2.0 / d2) - d1**2)
    return mean, np.sqrt(var)


# ---------------------------------------------------------------- sampling


def point_rng(seed: int, part: int, *dims: int) -> np.random.Generator:
    """The generator of one grid point: seeded by (seed, part, dims), so a point's draws do not
    depend on the rest of the grid (a small test grid reproduces the full run's numbers)."""
    return np.random.default_rng([seed, part, *dims])


def sample_l2_norms(d: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """‖x‖₂ of m independent x ~ N(0, I_d), drawn in chunks of at most ``CHUNK_ELEMENTS``."""
    rows = max(1, CHUNK_ELEMENTS // d)
    norms = np.empty(m)
    for start in range(0, m, rows):
        x = rng.standard_normal((min(rows, m - start), d))
        norms[start:start + x.shape[0]] = np.sqrt(np.einsum("ij,ij->i", x, x))
    return norms


def sample_wx_rms_sq(d1: int, d2: int, m: int, rng: np.random.Generator, scales: Sequence[float] = (1.0,)) -> np.ndarray:
    """‖s·W x‖²_RMS = ‖s·W x‖²/d2 for m independent draws of W (d2 × d1) and x (d1), each scale s.

    W and x are sampled themselves (not through the χ² identity the exact values use), in
    chunks of at most ``CHUNK_ELEMENTS`` entries of W. Returns an array (len(scales), m);
    every scale uses the same draws.
    """
    per = max(1, CHUNK_ELEMENTS // (d1 * d2))
    values = np.empty((len(scales), m))
    for start in range(0, m, per):
        k = min(per, m - start)
        w = rng.standard_normal((k, d2, d1))
        x = rng.standard_normal((k, d1, 1))
        y = (w @ x)[..., 0]
        for i, s in enumerate(scales):
            sy = s * y
            values[i, start:start + k] = np.einsum("ij,ij->i", sy, sy) / d2
    return values


class Estimate(NamedTuple):
    """A sample mean with its spread and confidence interval (:data:`CI_METHOD`)."""

    mean: float
    std: float  # sample standard deviation, ddof = 1
    low: float
    high: float


def mean_ci(samples: np.ndarray, confidence: float) -> Estimate:
    """The mean of ``samples`` with the Student t interval mean ± t_{m−1,(1+c)/2} · s/√m.

    The interval is exact for normal samples and asymptotically exact (central limit
    theorem) for any with finite variance.
    """
    m = samples.shape[0]
    mean = float(np.mean(samples))
    std = float(np.std(samples, ddof=1))
    half = float(special.stdtrit(m - 1, (1.0 + confidence) / 2.0)) * std / math.sqrt(m)
    return Estimate(mean, std, mean - half, mean + half)


class Fit(NamedTuple):
    slope: float
    stderr: float  # the least-squares standard error of the slope (residual scatter, n − 2 dof)
    intercept: float


def loglog_fit(d: Sequence[float], values: Sequence[float]) -> Fit:
    """Least-squares line ln(value) = slope · ln(d) + intercept (``scipy.stats.linregress``)."""
    fit = stats.linregress(np.log(np.asarray(d, dtype=np.float64)), np.log(np.asarray(values, dtype=np.float64)))
    return Fit(float(fit.slope), float(fit.stderr), float(fit.intercept))


def dimension_grid(d_min: int, d_max: int, per_decade: int) -> list[int]:
    """Integers log-spaced from d_min to d_max (both included), about ``per_decade`` per decade,
    rounded and deduplicated (rounding merges neighbours at small d)."""
    if d_min == d_max:
        return [d_min]
    count = max(2, round(math.log10(d_max / d_min) * per_decade) + 1)
    return sorted({int(round(v)) for v in np.logspace(math.log10(d_min), math.log10(d_max), count)})


# ---------------------------------------------------------------- the measurements


def _row(quantity: str, estimate: Estimate, m: int, exact: float, exact_std: float, **point: Any) -> dict[str, Any]:
    z = (estimate.mean - exact) / (estimate.std / math.sqrt(m)) if estimate.std > 0 else math.nan
    return {
        "quantity": quantity, "d": None, "d1": None, "d2": None, "scaling": None, **point,
        "samples": m, "estimate": estimate.mean, "ci_low": estimate.low, "ci_high": estimate.high,
        "sample_std": estimate.std, "exact": exact, "exact_std": exact_std, "z_score": z,
    }


def measure_norms(grid: Sequence[int], m: int, confidence: float, seed: int) -> list[dict[str, Any]]:
    """E‖x‖₂ and E‖x‖_RMS at each d of ``grid`` from m samples each (two rows per d)."""
    rows = []
    for d in grid:
        norms = sample_l2_norms(d, m, point_rng(seed, _NORMS, d))
        exact, exact_std = float(expected_l2_norm(d)), float(l2_norm_std(d))
        rows.append(_row("l2_norm", mean_ci(norms, confidence), m, exact, exact_std, d=d))
        root = math.sqrt(d)
        rows.append(_row("rms_norm", mean_ci(norms / root, confidence), m, exact / root, exact_std / root, d=d))
    return rows


SCALINGS = {"none": lambda d1: 1.0, "1/sqrt(d1)": lambda d1: 1.0 / math.sqrt(d1)}


def measure_matrix(d1s: Sequence[int], d2s: Sequence[int], m: int, confidence: float, seed: int) -> list[dict[str, Any]]:
    """E‖Wx‖²_RMS at each (d1, d2), unscaled and with W/√d1, from the same m draws (two rows each)."""
    rows = []
    for d1 in d1s:
        for d2 in d2s:
            scales = [scale(d1) for scale in SCALINGS.values()]
            values = sample_wx_rms_sq(d1, d2, m, point_rng(seed, _MATRIX, d1, d2), scales)
            for (name, _), s, v in zip(SCALINGS.items(), scales, values):
                exact, exact_std = expected_wx_rms_sq(d1, d2, s)
                rows.append(_row("wx_rms_sq", mean_ci(v, confidence), m, float(exact), float(exact_std),
                                 d1=d1, d2=d2, scaling=name))
    return rows


def fit_slopes(rows: Sequence[Mapping[str, Any]], fit_d_min: int) -> dict[str, Any]:
    """Log-log slopes of the estimates of E‖x‖₂ and E‖x‖_RMS over d ≥ ``fit_d_min``, and the
    same fit on the exact values (the reference: the exact curve is not a pure power law,
    its local slope is 1/2 + 1/(4d) + …, so the fit over a finite range sits slightly above
    1/2 and 0)."""
    slopes = {}
    for quantity, asymptote in (("l2_norm", 0.5), ("rms_norm", 0.0)):
        points = [r for r in rows if r["quantity"] == quantity and r["d"] >= fit_d_min]
        d = [r["d"] for r in points]
        measured = loglog_fit(d, [r["estimate"] for r in points])
        exact = loglog_fit(d, [r["exact"] for r in points])
        slopes[quantity] = {
            "slope": measured.slope, "stderr": measured.stderr, "intercept": measured.intercept,
            "exact_slope": exact.slope, "asymptotic_slope": asymptote,
            "d_min": min(d), "d_max": max(d), "points": len(d),
        }
    return slopes


# ---------------------------------------------------------------- config, records, summary


def parameters(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the config's ``rms_norm`` block (one :class:`ConfigError` line on bad input)."""
    block = config.get(STUDY)
    if not isinstance(block, Mapping):
        raise ConfigError(f"The config has no {STUDY!r} block of parameters; run implicit-bias experiment={STUDY}.")
    p = validate("study", STUDY, PARAMS, block)
    if p["d_max"] < p["d_min"]:
        raise ConfigError(f"The 'd_max' parameter of study {STUDY!r} must be an int in [d_min = {p['d_min']}, 1e+06]. "
                          f"Got {p['d_max']} instead.")
    grid = dimension_grid(p["d_min"], p["d_max"], p["points_per_decade"])
    fitted = [d for d in grid if d >= p["fit_d_min"]]
    if len(fitted) < 3:
        raise ConfigError(f"The 'fit_d_min' parameter of study {STUDY!r} must leave at least 3 dimensions of the grid "
                          f"{grid} for the slope fit. Got {p['fit_d_min']} instead ({len(fitted)} left).")
    largest = max(p["d1"]) * max(p["d2"])
    if largest > MAX_MATRIX_ELEMENTS:
        raise ConfigError(f"The 'd1' and 'd2' parameters of study {STUDY!r} must have d1·d2 ≤ {MAX_MATRIX_ELEMENTS}. "
                          f"Got {max(p['d1'])}·{max(p['d2'])} = {largest} instead.")
    return p


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


CSV_COLUMNS = ["quantity", "d", "d1", "d2", "scaling", "samples", "estimate", "ci_low", "ci_high",
               "sample_std", "exact", "exact_std", "z_score"]


def summary_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """``summary.csv``: one row per estimate (a quantity at one grid point), full precision."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else repr(row[k]) if isinstance(row[k], float) else row[k])
                         for k in CSV_COLUMNS})
    return buffer.getvalue().encode()


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in body)])


def _ci(row: Mapping[str, Any]) -> str:
    return f"[{row['ci_low']:.6g}, {row['ci_high']:.6g}]"


def markdown(record: Mapping[str, Any]) -> str:
    """The printed summary: one table per part and the fitted slopes."""
    p, rows = record["parameters"], record["estimates"]
    level = f"{100 * p['confidence']:g}% CI"
    by_d = {}
    for r in rows:
        if r["quantity"] in ("l2_norm", "rms_norm"):
            by_d.setdefault(r["d"], {})[r["quantity"]] = r
    norms = _table(
        ["d", "E‖x‖₂ (MC)", level, "exact", "z", "E‖x‖_RMS (MC)", level, "exact"],
        [[str(d), f"{q['l2_norm']['estimate']:.6g}", _ci(q["l2_norm"]), f"{q['l2_norm']['exact']:.6g}",
          f"{q['l2_norm']['z_score']:+.2f}", f"{q['rms_norm']['estimate']:.6g}", _ci(q["rms_norm"]),
          f"{q['rms_norm']['exact']:.6g}"] for d, q in by_d.items()],
    )
    pairs = {}
    for r in rows:
        if r["quantity"] == "wx_rms_sq":
            pairs.setdefault((r["d1"], r["d2"]), {})[r["scaling"]] = r
    matrix = _table(
        ["d1", "d2", "E‖Wx‖²_RMS", level, "exact = d1", "z", "W/√d1: E‖Wx‖²_RMS", level, "exact = 1", "z"],
        [[str(d1), str(d2), f"{q['none']['estimate']:.5g}", _ci(q["none"]), f"{q['none']['exact']:g}",
          f"{q['none']['z_score']:+.2f}", f"{q['1/sqrt(d1)']['estimate']:.5g}", _ci(q["1/sqrt(d1)"]),
          f"{q['1/sqrt(d1)']['exact']:g}", f"{q['1/sqrt(d1)']['z_score']:+.2f}"] for (d1, d2), q in pairs.items()],
    )
    fits = []
    for quantity, label in (("l2_norm", "E‖x‖₂"), ("rms_norm", "E‖x‖_RMS")):
        s = record["slopes"][quantity]
        fits.append(f"log-log slope of {label} over d in [{s['d_min']}, {s['d_max']}] ({s['points']} points): "
                    f"{s['slope']:.5f} ± {s['stderr']:.5f} (fit standard error); the same fit on the exact values "
                    f"{s['exact_slope']:.5f}; d → ∞: {s['asymptotic_slope']:g}")
    return "\n\n".join([
        f"Norms of x ~ N(0, I_d), {p['samples']} samples per d ({record['ci_method']}; z = {record['z_score']}):",
        norms, "\n".join(fits),
        f"y = Wx, W (d2 × d1) and x with i.i.d. N(0, 1) entries, {p['matrix_samples']} samples per (d1, d2):",
        matrix,
    ])


def run(config: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Run the study configured by ``config['rms_norm']`` and write its records into ``out_dir``.

    Parameters
    ----------
    config : Mapping
        The composed, resolved config; only its ``rms_norm`` block is read.
    out_dir : Path
        Where ``result.json``, ``summary.csv`` and the figures go.

    Returns
    -------
    dict
        The record written to ``result.json``.

    Raises
    ------
    ConfigError
        For a bad ``rms_norm`` block, before anything is sampled or written.
    """
    p = parameters(config)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    grid = dimension_grid(p["d_min"], p["d_max"], p["points_per_decade"])
    rows = measure_norms(grid, p["samples"], p["confidence"], p["seed"])
    slopes = fit_slopes(rows, p["fit_d_min"])
    rows += measure_matrix(p["d1"], p["d2"], p["matrix_samples"], p["confidence"], p["seed"])
    record = jsonable({
        "study": STUDY,
        "parameters": p,
        "overrides": _overrides(),
        "d_grid": grid,
        "ci_method": CI_METHOD,
        "z_score": Z_SCORE,
        "exact": {
            "l2_norm": "E‖x‖₂ = √2 Γ((d+1)/2)/Γ(d/2) (chi mean, via scipy.special.gammaln); sd = √(d − (E‖x‖₂)²)",
            "rms_norm": "E‖x‖_RMS = E‖x‖₂/√d",
            "wx_rms_sq": "E‖sWx‖²_RMS = s² d1; sd = s² √((d1² + 2 d1)(1 + 2/d2) − d1²); s = 1 or 1/√d1",
        },
        "estimates": rows,
        "slopes": slopes,
        "max_abs_z_score": max(abs(r["z_score"]) for r in rows),
        "wall_time_s": time.perf_counter() - start,
        "seed": p["seed"],
        "versions": package_versions(),
    })
    write_json(out_dir / RESULT_FILE, record)
    atomic_write(out_dir / SUMMARY_FILE, summary_csv(record["estimates"]))
    log.info(markdown(record))
    if p["figure"]:
        try:
            write_figures(record, out_dir)
        except Exception as err:  # the records are written and stay valid; a figure is optional
            log.warning("rms_norm: the figures could not be drawn (%s: %s); the records are complete",
                        type(err).__name__, err)
    return record


# ---------------------------------------------------------------- figures (matplotlib only here)


def write_figures(record: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Draw the three figures (PNG) into ``out_dir``; return their paths."""
    paths = []
    for key, draw in (("norms", draw_norms), ("matrix", draw_matrix), ("balls", draw_balls)):
        path = Path(out_dir) / FIGURES[key]
        atomic_write(path, draw(record))
        paths.append(path)
    return paths


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _series(rows: Sequence[Mapping[str, Any]], **match: Any) -> dict[str, np.ndarray]:
    chosen = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return {k: np.array([r[k] for r in chosen], dtype=np.float64)
            for k in ("d", "d1", "d2", "estimate", "ci_low", "ci_high", "exact") if chosen[0][k] is not None}


def draw_norms(record: Mapping[str, Any]) -> bytes:
    """E‖x‖₂ and E‖x‖_RMS against d (log-log, CIs, exact curves, fits) and the relative deviation."""
    from matplotlib.figure import Figure

    rows, slopes, p = record["estimates"], record["slopes"], record["parameters"]
    fig = Figure(figsize=(12.5, 5.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    grid = np.array(record["d_grid"], dtype=np.float64)
    dense = np.unique(np.geomspace(grid[0], grid[-1], 400).round())
    exact_l2 = expected_l2_norm(dense)
    for quantity, label, color, exact in (("l2_norm", "‖x‖₂", "tab:blue", exact_l2),
                                           ("rms_norm", "‖x‖_RMS", "tab:red", exact_l2 / np.sqrt(dense))):
        s, fit = _series(rows, quantity=quantity), slopes[quantity]
        left.plot(dense, exact, color=color, lw=1.2, label=f"exact E{label}")
        left.errorbar(s["d"], s["estimate"], yerr=[s["estimate"] - s["ci_low"], s["ci_high"] - s["estimate"]],
                      fmt="o", ms=4, color=color, mfc="none", capsize=2,
                      label=f"Monte Carlo E{label} ({100 * p['confidence']:g}% CI)")
        span = np.array([fit["d_min"], fit["d_max"]], dtype=np.float64)
        left.plot(span, np.exp(fit["intercept"]) * span ** fit["slope"], color="black", ls=":", lw=1.2,
                  label=f"fit d ≥ {fit['d_min']}: slope {fit['slope']:.4f} ± {fit['stderr']:.4f}")
    left.plot(dense, np.sqrt(dense), color="tab:gray", ls="--", lw=1, label="√d")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("dimension d")
    left.set_ylabel("E‖x‖,  x ~ N(0, I_d)")
    left.set_title(f"E‖x‖₂ grows like √d, E‖x‖_RMS = E‖x‖₂/√d → 1  ({p['samples']} samples per d)", fontsize=10)
    left.grid(True, which="major", alpha=0.3)
    left.legend(fontsize=8, loc="upper left")

    s = _series(rows, quantity="l2_norm")
    right.axhline(0.0, color="black", lw=0.8)
    right.errorbar(s["d"], s["estimate"] / s["exact"] - 1, yerr=[(s["estimate"] - s["ci_low"]) / s["exact"],
                   (s["ci_high"] - s["estimate"]) / s["exact"]], fmt="o", ms=4, color="tab:blue", capsize=2,
                   label=f"Monte Carlo / exact − 1 ({100 * p['confidence']:g}% CI)")
    right.plot(dense, np.sqrt(dense) / exact_l2 - 1, color="tab:gray", ls="--", lw=1.2,
               label="√d / exact − 1 (the large-d approximation)")
    right.set_xscale("log")
    right.set_xlabel("dimension d")
    right.set_ylabel("relative deviation from √2 Γ((d+1)/2)/Γ(d/2)")
    right.set_title("estimate against the exact mean (identical for ‖x‖_RMS)", fontsize=10)
    right.grid(True, which="major", alpha=0.3)
    right.legend(fontsize=8)
    return _png(fig)


def draw_matrix(record: Mapping[str, Any]) -> bytes:
    """E‖Wx‖²_RMS against d1 for each d2: unscaled (≈ d1) and with W/√d1 (≈ 1)."""
    from matplotlib.figure import Figure

    rows, p = record["estimates"], record["parameters"]
    fig = Figure(figsize=(12.5, 5.0), layout="constrained")
    axes = fig.subplots(1, 2)
    d1s, d2s = p["d1"], p["d2"]
    colors = [f"C{i % 10}" for i in range(len(d2s))]
    spread = 0.06  # horizontal offset per d2 (fraction of a log-decade), so the error bars don't overlap
    shifts = 10 ** (spread * (np.arange(len(d2s)) - (len(d2s) - 1) / 2))
    for ax, scaling, title in ((axes[0], "none", "W with N(0, 1) entries: E‖Wx‖²_RMS = d1"),
                               (axes[1], "1/sqrt(d1)", "W/√d1: E‖Wx‖²_RMS = 1 for every d1, d2")):
        # the exact value as a bar across each d1's group of points (the points are offset in x)
        for d1 in d1s:
            exact = d1 if scaling == "none" else 1.0
            ax.plot([d1 * shifts[0] / 1.08, d1 * shifts[-1] * 1.08], [exact, exact], color="black", lw=2,
                    label=("exact: d1" if scaling == "none" else "exact: 1") if d1 == d1s[0] else None)
        for i, (d2, color) in enumerate(zip(d2s, colors)):
            s = _series(rows, quantity="wx_rms_sq", d2=d2, scaling=scaling)
            shift = shifts[i]
            ax.errorbar(s["d1"] * shift, s["estimate"], yerr=[s["estimate"] - s["ci_low"], s["ci_high"] - s["estimate"]],
                        fmt="o", ms=4, color=color, capsize=2, label=f"d2 = {d2}")
        ax.set_xscale("log")
        ax.set_xlabel("d1 (input dimension; points offset slightly by d2)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, title=f"{100 * p['confidence']:g}% CI", title_fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel(f"E‖Wx‖²_RMS  ({p['matrix_samples']} samples per point)")
    axes[1].set_ylabel("E‖(W/√d1) x‖²_RMS")
    return _png(fig)


def draw_balls(record: Mapping[str, Any] | None = None) -> bytes:
    """The unit balls {x ∈ R²: ‖x‖ ≤ 1} of ℓ2, RMS (= ℓ2 ball of radius √2), ℓ1 and ℓ∞."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 7.2), layout="constrained")
    ax = fig.subplots()
    t = np.linspace(0, 2 * np.pi, 721)
    r = math.sqrt(2)
    ax.plot(np.cos(t), np.sin(t), color="tab:blue", lw=2, label="ℓ2: x₁² + x₂² ≤ 1")
    ax.plot(r * np.cos(t), r * np.sin(t), color="tab:red", lw=2,
            label="RMS: √((x₁² + x₂²)/2) ≤ 1  (radius √2)")
    ax.plot([1, 0, -1, 0, 1], [0, 1, 0, -1, 0], color="tab:green", lw=2, label="ℓ1: |x₁| + |x₂| ≤ 1")
    ax.plot([1, -1, -1, 1, 1], [1, 1, -1, -1, 1], color="tab:purple", lw=2, label="ℓ∞: max(|x₁|, |x₂|) ≤ 1")
    ax.axhline(0, color="black", lw=0.6)
    ax.axvline(0, color="black", lw=0.6)
    ax.annotate("√2", xy=(r, 0), xytext=(r - 0.22, 0.12), color="tab:red", fontsize=11)
    ax.set_aspect("equal")
    ax.set_xlim(-1.75, 1.75)
    ax.set_ylim(-1.75, 1.75)
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title("Unit balls in two dimensions: the RMS ball is the ℓ2 ball of radius √2,\n"
                 "through the corners (±1, ±1) of the ℓ∞ ball", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.plot([1, -1, -1, 1], [1, 1, -1, -1], "o", color="tab:red", ms=5)  # on the RMS circle: ‖(±1, ±1)‖_RMS = 1
    fig.legend(*ax.get_legend_handles_labels(), fontsize=9, loc="outside lower center", ncol=2)
    return _png(fig)
