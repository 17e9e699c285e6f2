"""Datasets: least-squares problems f(θ) = (1/n) Σ_j (b_j − a_jᵀθ)² with a starting point θ0.

Every dataset factory returns a :class:`Problem`; the registry :data:`DATASETS` maps the
config name (``conf/dataset/<name>.yaml``) to the factory and its parameter constraints.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from .params import ConfigError, FiniteReal, Integer, Matrix, Real, Spec, Text, Vector


class Problem(NamedTuple):
    """Squared loss on a linear system, all arrays float64.

    A : (n, d) features, one row a_jᵀ per equation
    b : (n,) targets
    theta0 : (d,) starting point
    """

    A: np.ndarray
    b: np.ndarray
    theta0: np.ndarray


def residual(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """r = b − Aθ."""
    return problem.b - problem.A @ theta


def loss(problem: Problem, theta: np.ndarray) -> float:
    """f(θ) = (1/n) ‖b − Aθ‖²."""
    r = residual(problem, theta)
    return float(r @ r) / problem.A.shape[0]


def gradient(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """∇f(θ) = −(2/n) Aᵀ(b − Aθ)."""
    return problem.A.T @ residual(problem, theta) * (-2.0 / problem.A.shape[0])


SVD_LIMIT = 2000  # condition numbers are computed for min(n, d) up to this (an SVD's cost)


class Spectrum(NamedTuple):
    """The nonzero singular values' extremes of A, and its numerical rank."""

    largest: float
    smallest: float
    rank: int

    @property
    def kappa(self) -> float:
        return self.largest / self.smallest


def spectrum(A: np.ndarray) -> Spectrum | None:
    """σ_max, the smallest nonzero σ and the rank (the tolerance numpy's ``matrix_rank`` uses);
    None above :data:`SVD_LIMIT`, where the SVD would cost more than the run."""
    if A.shape[0] > 1 and min(A.shape) > SVD_LIMIT:
        return None
    sigma = np.linalg.svd(A, compute_uv=False)
    if not np.all(np.isfinite(sigma)):  # A near float64's largest numbers: its spectrum is unknown
        return None
    if sigma[0] == 0:
        return Spectrum(0.0, 0.0, 0)
    nonzero = sigma[sigma > sigma[0] * (max(A.shape) * np.finfo(np.float64).eps)]  # (max·eps first: no overflow near 1e308)
    return Spectrum(float(nonzero[0]), float(nonzero[-1]), int(nonzero.size))


def condition_number(problem: Problem) -> float | None:
    """κ(A) = σ_max / σ_min over the nonzero singular values (1 for one equation);
    None when min(n, d) > :data:`SVD_LIMIT`, where the SVD would cost more than the run."""
    if problem.A.shape[0] == 1:
        return 1.0
    spec = spectrum(problem.A)
    return None if spec is None or spec.smallest == 0 else spec.kappa


def feature_scale(A: np.ndarray) -> np.ndarray:
    """s_i = 1 / rms(column i) = 1/√(mean_j A_ji²): the scale giving every feature unit second moment.

    A column that is identically zero carries no information and never moves under any
    gradient method; it keeps scale 1 rather than an infinite one.
    """
    peak = np.max(np.abs(A), axis=0)
    unit = np.divide(A, peak, out=np.zeros_like(A), where=peak > 0)  # squares cannot overflow
    rms = peak * np.sqrt(np.mean(unit * unit, axis=0))
    scale = np.ones_like(rms)
    np.divide(1.0, rms, out=scale, where=rms > 0)
    return scale


def rescale_features(problem: Problem) -> tuple[Problem, np.ndarray]:
    """Reparametrize θ = s ⊙ θ' so that the features A' = A diag(s) have unit second moment.

    Returns the problem in θ' coordinates and ``s``; map a point back with ``s * theta_prime``.
    """
    s = feature_scale(problem.A)
    return Problem(problem.A * s, problem.b, problem.theta0 / s), s


def single_equation(a: np.ndarray, b: float, theta0: np.ndarray | None) -> Problem:
    """One equation aᵀθ = b (rank-one data, n = 1); ``theta0`` null means θ0 = 0."""
    d = a.shape[0]
    if theta0 is None:
        theta0 = np.zeros(d)
    elif theta0.shape[0] != d:
        raise ConfigError(
            f"The 'theta0' parameter of dataset 'single_equation' must have length {d} "
            f"(the length of 'a'). Got length {theta0.shape[0]} instead."
        )
    if not np.any(a):
        raise ConfigError(
            "The 'a' parameter of dataset 'single_equation' must have a non-zero entry "
            "(a = 0 makes aᵀθ = b unsolvable or trivial). Got all zeros instead."
        )
    return Problem(a[np.newaxis, :].copy(), np.array([b]), theta0.copy())


def _problem(name: str, A: np.ndarray, b: np.ndarray, theta0: np.ndarray | None, source: str = "") -> Problem:
    """Check shapes and values of a system and return it as a :class:`Problem`."""
    where = f" ({source})" if source else ""
    n, d = A.shape
    if b.shape != (n,):
        raise ConfigError(f"The 'b' parameter of dataset {name!r}{where} must have one entry per row of A "
                          f"({n}). Got shape {b.shape} instead.")
    if theta0 is None:
        theta0 = np.zeros(d)
    elif theta0.shape != (d,):
        raise ConfigError(f"The 'theta0' parameter of dataset {name!r}{where} must have length {d} "
                          f"(the number of columns of A). Got shape {theta0.shape} instead.")
    for key, array in (("A", A), ("b", b), ("theta0", theta0)):
        if not np.all(np.isfinite(array)):
            raise ConfigError(f"The {key!r} parameter of dataset {name!r}{where} must be finite. Got NaN or inf instead.")
    if not np.any(A):
        raise ConfigError(f"The 'A' parameter of dataset {name!r}{where} must have a non-zero entry. Got all zeros instead.")
    # A is never copied here (it can be most of the memory); every caller passes a fresh array
    return Problem(np.asarray(A, dtype=np.float64), np.array(b, dtype=np.float64), np.array(theta0, dtype=np.float64))


def linear_system(A: np.ndarray, b: np.ndarray, theta0: np.ndarray | None) -> Problem:
    """Aθ = b written inline: ``A`` one list per equation, ``b`` one value per equation."""
    return _problem("linear_system", A, b, theta0)


def from_file(path: str, theta0: np.ndarray | None) -> Problem:
    """A system read from ``path``: ``.npz`` with arrays ``A``, ``b`` (and optionally ``theta0``),
    or ``.csv`` with one equation per row and b in the last column (no header).

    Every way the file can fail (missing, a directory, a device, a symbolic link loop,
    unreadable, empty, truncated, damaged, too large for memory, wrong arrays or cells) is a
    :class:`ConfigError` naming the file and what is wrong, raised before A is allocated
    where the file says how large A is (``.npz``)."""
    file, handle = _open_data_file(path)
    with handle:
        if file.suffix == ".npz":
            A, b, stored = _read_npz(path, handle)
            theta0 = theta0 if theta0 is not None else (None if stored is None else np.ravel(stored).astype(np.float64))
        else:
            A, b = _read_csv(path, handle)
    return _problem("from_file", A, b, theta0, source=path)


def _open_data_file(path: str) -> tuple[Path, BinaryIO]:
    """``path`` as a regular, non-empty .npz or .csv file opened for reading, or a ConfigError
    saying which of these it is not (``os.stat`` follows links, so a loop or a dangling link
    is caught here, before anything is read)."""
    file, where = Path(path), os.path.abspath(path)

    def refuse(what: str) -> ConfigError:
        return ConfigError(f"The 'path' parameter of dataset 'from_file' must name an existing file (.npz or .csv) "
                           f"that can be read. Got {path!r} instead: {where} {what}.")

    try:
        info = file.stat()
    except OSError as err:
        if err.errno == errno.ENOENT and os.path.islink(path):
            raise refuse(f"is a symbolic link to {os.readlink(path)!r}, which does not exist") from None
        reasons = {errno.ENOENT: "does not exist", errno.ELOOP: "is a symbolic link loop",
                   errno.ENOTDIR: "does not exist (a part of the path is a file, not a directory)",
                   errno.EACCES: "cannot be reached (permission denied)", errno.EPERM: "cannot be reached (permission denied)"}
        raise refuse(reasons.get(err.errno, f"cannot be read ({err.strerror})")) from None
    if stat.S_ISDIR(info.st_mode):
        raise refuse("is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise refuse("is not a regular file (a device, pipe or socket)")
    if file.suffix not in (".npz", ".csv"):
        raise ConfigError(f"The 'path' parameter of dataset 'from_file' must end in .npz or .csv. Got {path!r} instead.")
    if info.st_size == 0:
        raise refuse("is empty (0 bytes)")
    try:
        return file, file.open("rb")
    except OSError as err:
        raise refuse(f"cannot be opened ({err.strerror or type(err).__name__})") from None


def _read_npz(path: str, handle: BinaryIO) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(A, b, theta0 or None) from an open .npz archive; A is checked against the memory a run
    needs from the array's header, before it is read."""
    def refuse(err: BaseException) -> ConfigError:
        text = str(err).strip().splitlines()
        detail = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
        damaged = isinstance(err, (EOFError, zipfile.BadZipFile, zlib.error))
        what = f"it is truncated or damaged ({detail})" if damaged else detail
        return ConfigError(f"The file {path!r} of dataset 'from_file' is not a readable NumPy .npz archive: {what}.")

    failures = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)
    try:
        npz = np.load(handle, allow_pickle=False)  # a .npy file under a .npz name loads as one array
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an archive of named arrays")
        with npz:
            names = sorted(npz.files)
            if "A" not in names or "b" not in names:
                raise ConfigError(f"The file {path!r} of dataset 'from_file' must contain arrays 'A' and 'b' "
                                  f"(and optionally 'theta0'). Got arrays {names} instead.")
            shape = _npz_shape(npz, "A")
            if shape is not None:
                _require_memory(f"The array 'A' of {path!r} (dataset 'from_file'), of shape {shape},",
                                math.prod(shape))
            arrays = {k: npz[k] for k in ("A", "b", "theta0") if k in names}
    except failures as err:
        raise refuse(err) from None
    for key, array in arrays.items():
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise ConfigError(f"The array {key!r} of {path!r} must hold real numbers. Got dtype {array.dtype} instead.")
    A, b = np.atleast_2d(arrays["A"].astype(np.float64)), np.ravel(arrays["b"]).astype(np.float64)
    if A.ndim != 2:
        raise ConfigError(f"The array 'A' of {path!r} must be 2-D. Got shape {A.shape} instead.")
    return A, b, arrays.get("theta0")


def _npz_shape(npz: Any, key: str) -> tuple[int, ...] | None:
    """The shape in the header of array ``key`` of an open archive (None for header versions
    numpy reads only with the data)."""
    member = f"{key}.npy" if f"{key}.npy" in npz.zip.namelist() else key
    with npz.zip.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            return None
        return tuple(readers[version](stream)[0])


def _read_csv(path: str, handle: BinaryIO) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) from an open .csv file: one equation per line, b last, no header."""
    try:
        text = handle.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"The file {path!r} of dataset 'from_file' must be UTF-8 text (a .csv). "
                          "Got undecodable bytes instead.") from None
    except OSError as err:
        raise ConfigError(f"The file {path!r} of dataset 'from_file' cannot be read ({err.strerror}).") from None
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        raise ConfigError(f"The file {path!r} of dataset 'from_file' must hold at least one equation "
                          "(features, then b, on each line). Got only blank lines instead.")
    table = []
    for number, line in enumerate(rows, start=1):
        cells = [c.strip() for c in line.split(",")]
        try:
            table.append([float(c) for c in cells])
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            raise ConfigError(f"Line {number} of {path!r} (dataset 'from_file') must hold numbers only. "
                              f"Got {bad!r} instead.") from None
    widths = {len(r) for r in table}
    if len(widths) != 1 or widths.pop() < 2:
        raise ConfigError(f"The file {path!r} (dataset 'from_file') must have the same number (≥ 2) of "
                          f"columns on every line: features, then b. Got line lengths {sorted({len(r) for r in table})}.")
    data = np.array(table)
    return np.ascontiguousarray(data[:, :-1]), data[:, -1]  # A contiguous, as the runner's products want


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: copies of the n × d matrix A that every run holds: the problem's A, and the runner's |A|
#: (for the gradient test's scale) and −(2/n)Aᵀ (for the gradient). Optimizers that need
#: per-sample gradients or minibatches, and the min-ℓ2 reference (an SVD), hold more, but these
#: three are the floor: a dataset whose three copies do not fit is refused for certain.
RUN_COPIES = 3


def available_memory() -> int | None:
    """Bytes this process can still allocate, or None if the system does not say.

    ``MemAvailable`` from /proc/meminfo (the kernel's estimate of memory available without
    swapping), else free physical pages (``SC_AVPHYS_PAGES`` × ``SC_PAGE_SIZE``), lowered to
    what a cgroup memory limit leaves (cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``).
    """
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap, used = int(Path(limit).read_text()), int(Path(usage).read_text())
        except (OSError, ValueError):  # absent, or "max": no limit
            continue
        if cap < 2**60:  # "no limit" is written as a huge number
            found.append(max(cap - used, 0))
    return min(found) if found else None


def _size(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} bytes"


def _require_memory(subject: str, elements: int, hint: str = "") -> None:
    """Refuse a matrix A of ``elements`` float64 entries whose :data:`RUN_COPIES` copies
    (8 bytes an entry each) exceed :func:`available_memory`, before it is allocated."""
    available = available_memory()
    need = RUN_COPIES * 8 * elements
    if available is not None and need > available:
        raise ConfigError(f"{subject} needs about {_size(need)} of memory ({RUN_COPIES} copies of A at "
                          f"{_size(8 * elements)} each: A, |A| and −(2/n)Aᵀ), but {_size(available)} is available"
                          f"{hint}.")


#: the largest gaussian A (2 GB of float64): the run's references (an SVD, two LPs) grow
#: faster than the run itself, so larger systems are refused even where memory would allow
GAUSSIAN_ENTRIES = 250_000_000


def gaussian(n: int, d: int, scales: np.ndarray | None, seed: int, theta0: np.ndarray | None) -> Problem:
    """A consistent random system: A_ij ~ N(0, scales_j²), θ* ~ N(0, I), b = Aθ* (seeded).

    Refused before anything is allocated when A's :data:`RUN_COPIES` copies do not fit in the
    available memory, or A has more than :data:`GAUSSIAN_ENTRIES` entries."""
    if scales is not None and scales.shape != (d,):
        raise ConfigError(f"The 'scales' parameter of dataset 'gaussian' must have length d = {d}. "
                          f"Got length {scales.shape[0]} instead.")
    entries = n * d
    available = available_memory()
    most = f"{min(GAUSSIAN_ENTRIES, available // (8 * RUN_COPIES)):,}".replace(",", " ") if available else ""
    _require_memory(f"The dataset 'gaussian' with n = {n} and d = {d}", entries,
                    f"; n · d must be at most {most} here" if most else "")
    if entries > GAUSSIAN_ENTRIES:
        raise ConfigError(f"The dataset 'gaussian' with n = {n} and d = {d} needs {_size(8 * entries)} for A; "
                          f"n · d must be at most {GAUSSIAN_ENTRIES:,}.".replace(",", " "))
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    if scales is not None:
        A *= scales  # in place: one n × d array, never two
    return _problem("gaussian", A, A @ rng.standard_normal(d), theta0)


def mixed_sign(theta0: np.ndarray | None) -> Problem:
    """Two equations whose features have both signs and very different scales:
    [1, −0.5, 0.1, −2]·θ = 1 and [0.5, 1, −1, 0.2]·θ = −0.5."""
    A = np.array([[1.0, -0.5, 0.1, -2.0], [0.5, 1.0, -1.0, 0.2]])
    return _problem("mixed_sign", A, np.array([1.0, -0.5]), theta0)


def two_equations(theta0: np.ndarray | None) -> Problem:
    """[1, 2, 0]·θ = 1 and [0, 1, 3]·θ = 1: signSGD's limit is not the min-ℓ∞ interpolant.

    Wilson's condition A sign(Aᵀb) = c·b fails here ([3, 4] is not a multiple of [1, 1]), so
    no theory fixes sign descent's limit; measured from θ0 = 0 with the default geometric
    schedule it ends 2e-3 (ℓ∞) from the min-ℓ∞ interpolant (docs/theory.md §2.6; Gunasekar et al. 2018)."""
    A = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    return _problem("two_equations", A, np.array([1.0, 1.0]), theta0)


def wilson2017(n: int, positive_fraction: float, seed: int) -> Problem:
    """The construction of Wilson, Roelofs, Stern, Srebro, Recht (NeurIPS 2017, §3.3), as least
    squares: sample i has label y_i = ±1 (b_i = y_i), features x_i1 = y_i, x_i2 = x_i3 = 1, and a
    private block of ones, 1 feature long if y_i = 1 and 5 long if y_i = −1. With more positive
    labels, A sign(Aᵀb) = 4b, so adaptive methods from 0 reach sign(Aᵀb)/4 while GD reaches the
    min-ℓ2 solution. θ0 = 0."""
    rng = np.random.default_rng(seed)
    positives = max(int(round(positive_fraction * n)), n // 2 + 1)
    y = np.array([1.0] * positives + [-1.0] * (n - positives))
    rng.shuffle(y)
    widths = np.where(y > 0, 1, 5)
    d = 3 + int(widths.sum())
    _require_memory(f"The dataset 'wilson2017' with n = {n} (d = {d})", n * d)
    A = np.zeros((n, d))
    A[:, 0], A[:, 1], A[:, 2] = y, 1.0, 1.0
    start = 3
    for i, width in enumerate(widths):
        A[i, start:start + width] = 1.0
        start += width
    return _problem("wilson2017", A, y, None)


OPTIONAL_START = Vector(optional=True)

DATASETS = {
    "single_equation": Spec(single_equation, {"a": Vector(), "b": FiniteReal(), "theta0": OPTIONAL_START}),
    "linear_system": Spec(linear_system, {"A": Matrix(), "b": Vector(), "theta0": OPTIONAL_START}),
    "from_file": Spec(from_file, {"path": Text(), "theta0": OPTIONAL_START}),
    "gaussian": Spec(gaussian, {"n": Integer(1), "d": Integer(1),  # size: checked against memory
                                "scales": Vector(optional=True), "seed": Integer(0), "theta0": OPTIONAL_START}),
    "mixed_sign": Spec(mixed_sign, {"theta0": OPTIONAL_START}),
    "two_equations": Spec(two_equations, {"theta0": OPTIONAL_START}),
    "wilson2017": Spec(wilson2017, {"n": Integer(2, 10_000), "positive_fraction": Real(0.5, 1.0, closed="right"),
                                    "seed": Integer(0)}),
}
