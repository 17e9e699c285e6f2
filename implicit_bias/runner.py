"""Run an optimizer to convergence, or stop with an honest status.

Statuses
--------
``converged``   both tests held at a check step (below).
``max_steps``   ``max_steps`` steps were taken without passing the tests; the message says
                whether the iterates were still moving or had stalled.
``diverged``    the loss exceeded ``divergence_factor`` × max(initial loss, ‖b‖²/n), the
                second term keeping a start next to a solution from making the bar tiny.
``non_finite``  the loss or an iterate became inf or NaN.

Convergence test (evaluated every ``check_every`` steps, in the problem's own coordinates,
Euclidean norms)::

    ‖θ_t − θ_{t−1}‖ ≤ step_tol · max(‖θ_t‖, ‖b‖/‖A‖_F)                 the iterates stopped moving
    ‖∇f(θ_t)‖       ≤ grad_tol · (2/n) ‖ |A|ᵀ (|b| + |A| |θ_t|) ‖        at a stationary point

Both sides of each test scale the same way under any rescaling of A, b and θ, so the test
means the same thing for data of any magnitude. The right side of the gradient test is the
size of the terms the gradient is computed from (|·| elementwise: the componentwise
backward-error scale), so its float64 rounding floor is about d·eps and 1e-12 is reachable;
‖b‖/‖A‖_F is the size of the minimum-norm solution of one equation, a floor for the step
test when θ_t is near 0.

Both are needed: a decaying schedule can shrink the step to nothing far from any solution
(step test passes, gradient test fails), and a sign method with a constant step can cross a
solution with a large step (gradient test can pass, step test fails).

The test runs at check steps spaced max(``check_every``, ⌊``check_fraction`` · t⌋) apart
(10 steps, or 1 % of the steps so far), which keeps the inner loop as cheap as a
hand-written numpy loop; ``steps`` is the first check step at which the test held, so it is
at most that spacing above the first step where it would have held. ``check_every=1
check_fraction=0`` checks every step. A failing check costs three dot products.

The trajectory is recorded at log-spaced steps into preallocated arrays: no per-step I/O
and no per-step Python objects beyond the optimizer's own arrays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .optimizers import Optimizer
from .params import Boolean, Integer, Real
from .problems import Problem, loss
from .schedules import Schedule

STATUSES = ("converged", "max_steps", "diverged", "non_finite")

#: steps of schedule values evaluated per call (amortizes the schedule's numpy calls)
BLOCK = 4096


class RunSettings(NamedTuple):
    max_steps: int = 100_000
    check_every: int = 10
    check_fraction: float = 0.01
    step_tol: float = 1e-12
    grad_tol: float = 1e-12
    divergence_factor: float = 1e12
    records_per_decade: int = 50
    batch_size: int | None = None  # None: full batch (one step per epoch)
    shuffle: bool = True  # reshuffle the samples every epoch (minibatch steps only)
    seed: int = 0  # seeds the shuffling


SETTINGS = {
    "max_steps": Integer(1),
    "check_every": Integer(1),
    "check_fraction": Real(0.0, 1.0, closed="left"),
    "step_tol": Real(0.0, closed="left"),
    "grad_tol": Real(0.0, closed="left"),
    "divergence_factor": Real(1.0),
    "records_per_decade": Integer(1, 1000),
    "batch_size": Integer(1, optional=True),
    "shuffle": Boolean(),
    "seed": Integer(0),
}


class Trajectory(NamedTuple):
    """Iterates at log-spaced steps (and the last one): step (k,), theta (k, d), loss (k,), lr (k,)."""

    step: np.ndarray
    theta: np.ndarray
    loss: np.ndarray
    lr: np.ndarray


class RunResult(NamedTuple):
    theta: np.ndarray
    status: str
    message: str
    steps: int
    wall_time_s: float
    final_loss: float
    step_norm: float
    grad_norm: float
    trajectory: Trajectory


def log_spaced_steps(max_steps: int, per_decade: int) -> np.ndarray:
    """Steps 0..10, then ``per_decade`` log-spaced steps per decade up to ``max_steps``."""
    dense = np.arange(0, min(max_steps, 10) + 1)
    if max_steps <= 10:
        return dense
    count = int(math.ceil((math.log10(max_steps) - 1.0) * per_decade)) + 1
    sparse = np.round(np.logspace(1.0, math.log10(max_steps), count)).astype(np.int64)
    return np.unique(np.concatenate([dense, np.minimum(sparse, max_steps)]))


Progress = Callable[[int, float, np.ndarray], None]


def run(
    problem: Problem,
    optimizer: Optimizer,
    schedule: Schedule,
    settings: RunSettings = RunSettings(),
    progress: Progress | None = None,
) -> RunResult:
    """Iterate θ ← θ + update(∇f(θ), state, α_t) from θ0 until a stopping rule fires.

    ``progress(t, loss, theta)``, if given, is called at every check step; it decides itself
    whether to report anything (the runner does no I/O).
    """
    with np.errstate(all="ignore"):  # overflow and underflow are detected and reported as statuses
        return _run(problem, optimizer, schedule, settings, progress)


def _run(problem: Problem, optimizer: Optimizer, schedule: Schedule, settings: RunSettings, progress: Progress | None) -> RunResult:
    started = time.perf_counter()
    if optimizer.reparametrize is None:
        work, scale = problem, None
    else:
        work, scale = optimizer.reparametrize(problem)
    A, b = work.A, work.b
    grad_matrix = A.T * (-2.0 / A.shape[0])  # ∇f(θ) = grad_matrix @ (b − Aθ)
    update, begin_epoch, observe = optimizer.update, optimizer.begin_epoch, optimizer.observe
    # row j times r_j is ∇f_j(θ), f_j = (b_j − a_jᵀθ)²; a copy of A, so only made when needed
    sample_matrix = A * -2.0 if (begin_epoch or observe) else None
    monitor = _Monitor(problem, scale, settings, progress)

    theta = work.theta0.copy()
    state = optimizer.init(theta)
    if settings.batch_size is not None and settings.batch_size < A.shape[0]:
        theta, state, t, status = _minibatch_loop(work, optimizer, schedule, settings, monitor, theta, state)
        return _result(theta, scale, status, t, started, monitor)
    delta = np.zeros_like(theta)
    t, next_event, status = 0, 0, None
    for first in range(0, settings.max_steps + 1, BLOCK):
        rates = schedule(np.arange(first, min(first + BLOCK, settings.max_steps + 1))).tolist()
        for lr in rates:
            r = b - A @ theta
            g = grad_matrix @ r
            if t == next_event:
                status = monitor.event(t, theta, r, g, delta, lr)
                if status is not None:
                    break
                next_event = monitor.next_event
            # Full-batch steps: every epoch is one step, seeing every sample once.
            if begin_epoch is not None:
                state = begin_epoch(r[:, np.newaxis] * sample_matrix, state)
            if observe is not None:
                state = observe(r[:, np.newaxis] * sample_matrix, state)
            delta, state = update(g, state, lr)
            theta = theta + delta
            t += 1
        if status is not None:
            break
    return _result(theta, scale, status, t, started, monitor)


def _minibatch_loop(work: Problem, optimizer: Optimizer, schedule: Schedule, settings: RunSettings,
                    monitor: "_Monitor", theta: np.ndarray, state):
    """Minibatch steps: each epoch visits every sample once, in batches of ``batch_size``
    (the last batch may be smaller), reshuffled each epoch if ``shuffle``. A step uses its
    batch's mean gradient −(2/|B|) A_Bᵀ(b_B − A_B θ); the convergence tests use the full one."""
    A, b = work.A, work.b
    n, size = A.shape[0], settings.batch_size
    grad_matrix = A.T * (-2.0 / n)
    sample_matrix = A * -2.0
    steps_per_epoch = -(-n // size)
    rng = np.random.default_rng(settings.seed)
    update, begin_epoch, observe = optimizer.update, optimizer.begin_epoch, optimizer.observe
    delta = np.zeros_like(theta)
    t, next_event, batches = 0, 0, []
    for first in range(0, settings.max_steps + 1, BLOCK):
        rates = schedule(np.arange(first, min(first + BLOCK, settings.max_steps + 1))).tolist()
        for lr in rates:
            k = t % steps_per_epoch
            if k == 0:  # a new epoch: a new order, its batches sliced once
                order = rng.permutation(n) if settings.shuffle else np.arange(n)
                batches = [(A[i], b[i], A[i].T * (-2.0 / len(i)), sample_matrix[i])
                           for i in (order[j:j + size] for j in range(0, n, size))]
                if begin_epoch is not None:
                    state = begin_epoch((b - A @ theta)[:, np.newaxis] * sample_matrix, state)
            if t == next_event:
                r = b - A @ theta
                status = monitor.event(t, theta, r, grad_matrix @ r, delta, lr)
                if status is not None:
                    return theta, state, t, status
                next_event = monitor.next_event
            A_batch, b_batch, batch_grad, batch_samples = batches[k]
            r_batch = b_batch - A_batch @ theta
            if observe is not None:
                state = observe(r_batch[:, np.newaxis] * batch_samples, state)
            delta, state = update(batch_grad @ r_batch, state, lr)
            theta = theta + delta
            t += 1
    raise AssertionError("the monitor stops every run at max_steps")


def _result(theta: np.ndarray, scale: np.ndarray | None, status: str, t: int, started: float,
            monitor: "_Monitor") -> RunResult:
    limit = theta if scale is None else theta * scale
    return RunResult(
        theta=limit,
        status=status,
        message=monitor.message,
        steps=t,
        wall_time_s=time.perf_counter() - started,
        final_loss=monitor.last_loss,
        step_norm=monitor.last_step_norm,
        grad_norm=monitor.last_grad_norm,
        trajectory=monitor.trajectory(),
    )


class _Monitor:
    """Everything the loop does only now and then: record, test, decide to stop."""

    def __init__(self, problem: Problem, scale: np.ndarray | None, settings: RunSettings, progress: Progress | None):
        self.settings = settings
        self.progress = progress
        self.scale = scale
        A, b = problem.A, problem.b
        self.n = A.shape[0]
        self.abs_A, self.abs_b = np.abs(A), np.abs(b)
        frobenius = float(np.linalg.norm(A))
        b_norm = float(np.linalg.norm(b))
        self.frobenius, self.b_norm = frobenius, b_norm
        self.theta_floor = b_norm / frobenius if frobenius > 0 else 0.0
        self.record_steps = log_spaced_steps(settings.max_steps, settings.records_per_decade).tolist()
        size = len(self.record_steps) + 1
        self.steps = np.zeros(size, dtype=np.int64)
        self.thetas = np.zeros((size, A.shape[1]))
        self.losses = np.zeros(size)
        self.rates = np.zeros(size)
        self.count = 0
        self.next_record_index = 0
        self.next_check = 0
        self.next_event = 0
        loss_scale = max(loss(problem, problem.theta0), b_norm * b_norm / self.n, np.finfo(np.float64).tiny)
        self.divergence_threshold = settings.divergence_factor * loss_scale
        self.message = ""
        self.last_loss = math.nan
        self.last_step_norm = math.nan
        self.last_grad_norm = math.nan

    def event(self, t: int, theta: np.ndarray, r: np.ndarray, g: np.ndarray, delta: np.ndarray, lr: float) -> str | None:
        current_loss = float(r @ r) / self.n
        self.last_loss = current_loss
        if self.next_record_index < len(self.record_steps) and t == self.record_steps[self.next_record_index]:
            self._record(t, self._original(theta), current_loss, lr)
            self.next_record_index += 1
        status = None
        if t == self.next_check or t == self.settings.max_steps:
            status = self._test(t, theta, r, g, delta, current_loss)
            self.next_check = t + max(self.settings.check_every, int(t * self.settings.check_fraction))
            if self.progress is not None and status is None:
                self.progress(t, current_loss, self._original(theta))
        if status is not None:
            if self.count == 0 or self.steps[self.count - 1] != t:
                self._record(t, self._original(theta), current_loss, lr)
            return status
        self.next_event = min(self.next_check, self.settings.max_steps)
        if self.next_record_index < len(self.record_steps):
            self.next_event = min(self.next_event, self.record_steps[self.next_record_index])
        return None

    def _original(self, theta: np.ndarray) -> np.ndarray:
        """A point in the problem's coordinates (the optimizer may run in rescaled ones)."""
        return theta if self.scale is None else theta * self.scale

    def _record(self, t: int, theta: np.ndarray, current_loss: float, lr: float) -> None:
        k = self.count
        self.steps[k], self.thetas[k], self.losses[k], self.rates[k] = t, theta, current_loss, lr
        self.count += 1

    def _test(self, t: int, theta: np.ndarray, r: np.ndarray, g: np.ndarray, delta: np.ndarray, current_loss: float) -> str | None:
        # A finite loss implies finite iterates: a non-finite coordinate of θ makes Aθ
        # non-finite unless its column is zero, and a zero column's coordinate never moves.
        s = self.settings
        if not math.isfinite(current_loss):
            self.message = (
                f"non-finite loss at step {t} ({current_loss}): the iterates overflowed (the step size is "
                f"far too large) or the data are too large for their squares to be represented in float64"
            )
            return "non_finite"
        if current_loss > self.divergence_threshold:
            self.message = (
                f"diverged at step {t}: loss {current_loss:.3g} exceeded {s.divergence_factor:g} "
                f"times its initial scale; the step size is too large for this problem"
            )
            return "diverged"
        theta, g = self._original(theta), g if self.scale is None else g / self.scale  # ∇_θ f = ∇_θ' f / s
        grad_norm = math.sqrt(float(g @ g))
        theta_norm = math.sqrt(float(theta @ theta))
        self.last_grad_norm = grad_norm
        # Fast path: ‖A‖_F (‖b‖ + ‖A‖_F ‖θ‖) bounds the exact scale from above, so a gradient
        # above this bound fails the test without computing the exact scale.
        rough_bound = s.grad_tol * (2.0 / self.n) * self.frobenius * (self.b_norm + self.frobenius * theta_norm)
        if grad_norm > rough_bound and t < s.max_steps:
            return None
        terms = self.abs_A.T @ (self.abs_b + self.abs_A @ np.abs(theta))
        grad_bound = s.grad_tol * (2.0 / self.n) * math.sqrt(float(terms @ terms))
        step_norm = math.sqrt(float(self._original(delta) @ self._original(delta))) if t > 0 else math.inf
        step_bound = s.step_tol * max(theta_norm, self.theta_floor)
        self.last_step_norm = step_norm
        # A norm or bound that overflowed (data beyond ~1e150, whose squares leave float64)
        # must not pass as inf <= inf.
        grad_ok = grad_norm <= grad_bound < math.inf
        step_ok = step_norm <= step_bound < math.inf
        tests = f"step {step_norm:.2e} (tol {step_bound:.1e}), gradient {grad_norm:.2e} (tol {grad_bound:.1e})"
        if step_ok and grad_ok:
            exact = " The residual is exactly 0.0: the iterate solves the equations in float64 and no update moves it." if not np.any(r) else ""
            self.message = f"converged at step {t}: {tests}.{exact}"
            return "converged"
        if t < s.max_steps:
            return None
        if step_ok:
            self.message = (
                f"max_steps={t} reached, stalled: the steps vanished before the gradient did "
                f"(the schedule's total step size may be too small to reach a solution); {tests}"
            )
        else:
            self.message = f"max_steps={t} reached while still moving: {tests}"
        return "max_steps"

    def trajectory(self) -> Trajectory:
        k = self.count
        return Trajectory(self.steps[:k].copy(), self.thetas[:k].copy(), self.losses[:k].copy(), self.rates[:k].copy())
