"""Run an optimizer to convergence, or stop with an honest status; one run or many at once.

Statuses
--------
``converged``    the three tests below held at a check step.
``max_steps``    ``max_steps`` steps were taken without passing the tests; the message says
                 whether the iterates were still moving, had stalled (steps vanished), or had
                 their updates lost to θ's float64 resolution.
``diverged``     the loss exceeded ``divergence_factor`` × max(initial loss, ‖b‖²/n), the
                 second term keeping a start next to a solution from making the bar tiny.
``non_finite``   the loss or an iterate became inf or NaN.
``out_of_range`` before the first step: the data's gradient scale G*, ‖b‖ or the initial
                 residual lie outside [1e-150, 1e150], where the loss's squares leave float64.
``interrupted``  Ctrl-C (:class:`Interrupted` carries every member's result).

Convergence test (evaluated at check steps, in the problem's own coordinates, Euclidean norms
computed scale-safely; docs/theory.md §5.1)::

    G*  = (2/n) ‖ |A|ᵀ (|b| + |A θ0|) ‖            the data's gradient scale (fixed)
    G_t = (2/n) ‖ |A|ᵀ (|b| + |A| |θ_t|) ‖          the terms the gradient at θ_t is computed from
    ‖∇f(θ_t)‖ ≤ max(grad_tol · G*, ρ_d·eps · G_t)                      ρ_d = 8√(d+1)
    ‖Δ_t‖     ≤ max(step_tol · max(‖θ_t − θ0‖, ‖b‖/‖A‖_F), 4·eps·‖θ_t‖)
    ‖b − Aθ_t‖ < ‖b − Aθ0‖, or ‖∇f(θ0)‖ ≤ grad_tol · G*                  the run made progress

The bar is set by the data and by the part of θ0 that A sees, so a start far out in the null
space of A cannot loosen it; ρ_d·eps·G_t is the rounding floor of the computed gradient, so a
run from a huge start is converged once it is as close as float64 can tell. An update below
4·eps·‖θ_t‖ is lost to rounding. A run whose residual never fell got nowhere, unless its start
was stationary in the data's own sense.

Both the gradient and the step test are needed: a decaying schedule can shrink the step to
nothing far from any solution (step test passes, gradient test fails), and a sign method with
a constant step can cross a solution with a large step (gradient test can pass, step test fails).

The test runs at check steps spaced max(``check_every``, ⌊``check_fraction`` · t⌋) apart
(10 steps, or 1 % of the steps so far), which keeps the inner loop as cheap as a
hand-written numpy loop; ``steps`` is the first check step at which the test held, so it is
at most that spacing above the first step where it would have held. ``check_every=1
check_fraction=0`` checks every step. A failing check costs three dot products.

The trajectory is recorded at log-spaced steps into preallocated arrays: no per-step I/O
and no per-step Python objects beyond the optimizer's own arrays.

Many runs in one loop
---------------------
:func:`run_batch` runs B *members* — the same problem and optimizer, each with its own
schedule, its own values of the optimizer's numeric hyperparameters and its own seed — as
one loop over arrays with a leading member axis. Every member stops on its own test, and a
member that stops is removed from the arrays at once, so it costs no further work (and a
converged Adam member's moments never decay into slow subnormal floats). :func:`run` is
:func:`run_batch` for one member, without the member axis.

Vectors are columns: θ, gradients and optimizer state have shape (d, 1), or (B, d, 1) in a
batch; residuals (n, 1) or (B, n, 1). Every reduction — A θ, Aᵀ r, the norms of the test —
is a numpy ``matmul`` whose core operands are one member's column, so numpy makes the same
BLAS call for that member whatever the batch holds, and every other operation is
elementwise. A member of a batch therefore follows *bit for bit* the path of the same
configuration run alone (a test checks it for every optimizer). A plain 2-D product
``A @ Θ`` over the batch would be faster, but BLAS sums it in an order that depends on the
batch size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .optimizers import Optimizer, compact_state
from .params import Boolean, Integer, Real
from .problems import Problem, loss
from .schedules import Schedule
from .tolerances import EPS, RESOLUTION_FACTOR, data_gradient_scale, norm, norms, out_of_range, rounding_factor

STATUSES = ("converged", "max_steps", "diverged", "non_finite", "out_of_range", "interrupted")

#: the largest ``max_steps``: step counters, schedules and the trajectory's step array are
#: int64, and 10^15 steps would take decades at the fastest step this loop takes
MAX_STEPS_LIMIT = 10**15

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
    "max_steps": Integer(1, MAX_STEPS_LIMIT),
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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run` or :func:`run_batch`. ``results`` holds one
    :class:`RunResult` per member: the members that had stopped keep their results, and the
    members still running end with status ``interrupted`` at the iterate they had reached."""

    def __init__(self, results: list[RunResult]):
        super().__init__("interrupted")
        self.results = results


def log_spaced_steps(max_steps: int, per_decade: int) -> np.ndarray:
    """Steps 0..10, then ``per_decade`` log-spaced steps per decade up to ``max_steps``."""
    dense = np.arange(0, min(max_steps, 10) + 1)
    if max_steps <= 10:
        return dense
    count = int(math.ceil((math.log10(max_steps) - 1.0) * per_decade)) + 1
    sparse = np.round(np.logspace(1.0, math.log10(max_steps), count)).astype(np.int64)
    return np.array(sorted({*dense.tolist(), *np.minimum(sparse, max_steps).tolist()}), dtype=np.int64)  # np.unique would import numpy.ma (20 ms)


Progress = Callable[[int, float, np.ndarray], None]

#: ``make_optimizer(members)``: the optimizer for the members with these indices (0..B−1),
#: its per-member hyperparameters shaped (len(members), 1, 1); called again after members stop
OptimizerFactory = Callable[[np.ndarray], Optimizer]


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
    return _Engine(problem, lambda members: optimizer, [schedule], settings, [settings.seed], False, progress).run()[0]


def run_batch(
    problem: Problem,
    make_optimizer: OptimizerFactory,
    schedules: Sequence[Schedule],
    settings: RunSettings = RunSettings(),
    seeds: Sequence[int] | None = None,
) -> list[RunResult]:
    """Run ``len(schedules)`` members in one loop; member j uses ``schedules[j]``,
    ``seeds[j]`` (default ``settings.seed``) and its hyperparameters in ``make_optimizer``.
    Returns one :class:`RunResult` per member, equal to what :func:`run` returns for it."""
    seeds = [settings.seed] * len(schedules) if seeds is None else list(seeds)
    if len(seeds) != len(schedules) or not schedules:
        raise ValueError(f"run_batch needs one seed per schedule and at least one member; got {len(seeds)} seeds "
                         f"for {len(schedules)} schedules")
    return _Engine(problem, make_optimizer, schedules, settings, seeds, True, None).run()


def _take(arrays: Any, keep: np.ndarray) -> Any:
    return None if arrays is None else arrays[keep]


class _Engine:
    """The loop, its setup and the removal of stopped members."""

    def __init__(self, problem: Problem, make_optimizer: OptimizerFactory, schedules: Sequence[Schedule],
                 settings: RunSettings, seeds: Sequence[int], batched: bool, progress: Progress | None):
        self.started = time.perf_counter()
        self.problem, self.make_optimizer, self.schedules = problem, make_optimizer, list(schedules)
        self.settings, self.seeds, self.batched = settings, list(seeds), batched
        prototype = make_optimizer(np.arange(len(self.schedules)))
        if prototype.reparametrize is None:
            self.work, self.scale = problem, None
        else:
            self.work, self.scale = prototype.reparametrize(problem)
        with np.errstate(all="ignore"):  # data at float64's edges are reported as out_of_range, not warned about
            self.monitor = _Monitor(problem, self.scale, settings, progress, len(self.schedules), self.started)
        self.members = np.arange(len(self.schedules))  # the members still running
        self.position: tuple[int, Any] = (0, None)  # (t, θ) where Ctrl-C found the loop
        self.optimizer = prototype

    def run(self) -> list[RunResult]:
        with np.errstate(all="ignore"):  # overflow and underflow are detected and reported as statuses
            theta0 = self.work.theta0[:, np.newaxis]
            theta = np.repeat(theta0[np.newaxis], len(self.members), axis=0) if self.batched else theta0.copy()
            size = self.settings.batch_size
            loop = self._minibatch_loop if size is not None and size < self.work.A.shape[0] else self._full_batch_loop
            try:
                loop(theta)
            except KeyboardInterrupt:
                self.monitor.interrupt(self.members, *self.position)
                raise Interrupted([self.monitor.result(j) for j in range(len(self.schedules))]) from None
        return [self.monitor.result(j) for j in range(len(self.schedules))]

    def _rates(self, first: int) -> Any:
        """Step sizes for steps first.. of a block: floats (one run) or (steps, B, 1, 1) arrays."""
        steps = np.arange(first, min(first + BLOCK, self.settings.max_steps + 1))
        if not self.batched:
            return self.schedules[0](steps).tolist()
        values = np.stack([self.schedules[j](steps) for j in self.members], axis=1)
        return values[:, :, np.newaxis, np.newaxis]

    def _stop(self, stopped: np.ndarray, theta: np.ndarray, state: Any, rates: Any, *members_arrays: Any):
        """Drop the members that stopped from every per-member array; rebuild the optimizer."""
        keep = ~stopped
        self.members = self.members[keep]
        self.optimizer = self.make_optimizer(self.members)
        return (theta[keep], compact_state(state, keep), rates[:, keep],
                *(_take(arrays, keep) for arrays in members_arrays))

    def _full_batch_loop(self, theta: np.ndarray) -> None:
        A, b = self.work.A, self.work.b[:, np.newaxis]
        grad_matrix = A.T * (-2.0 / A.shape[0])  # ∇f(θ) = grad_matrix @ (b − Aθ)
        # column j times r_j is ∇f_j(θ), f_j = (b_j − a_jᵀθ)²; a copy of A, so only made when needed
        optimizer, monitor = self.optimizer, self.monitor
        needs_samples = optimizer.begin_epoch is not None or optimizer.observe is not None
        sample_matrix = A.T * -2.0 if needs_samples else None
        state = optimizer.init(theta)
        delta = np.zeros_like(theta)
        t, next_event = 0, 0
        try:  # zero cost until Ctrl-C; then the loop's position is kept for the record
            for first in range(0, self.settings.max_steps + 1, BLOCK):
                rates = self._rates(first)
                update, begin_epoch, observe = optimizer.update, optimizer.begin_epoch, optimizer.observe
                for i in range(len(rates)):
                    lr = rates[i]
                    r = b - A @ theta
                    g = grad_matrix @ r
                    if t == next_event:
                        stopped = monitor.event(t, self.members, theta, r, g, delta, lr)
                        if stopped is not None:
                            if stopped.all():
                                return
                            theta, state, rates, r, g, delta = self._stop(stopped, theta, state, rates, r, g, delta)
                            optimizer = self.optimizer
                            update, begin_epoch, observe = optimizer.update, optimizer.begin_epoch, optimizer.observe
                            lr = rates[i]
                        next_event = monitor.next_event
                    # Full-batch steps: every epoch is one step, seeing every sample once.
                    if sample_matrix is not None:
                        samples = sample_matrix * r.swapaxes(-1, -2)  # once, for both hooks
                        if begin_epoch is not None:
                            state = begin_epoch(samples, state)
                        if observe is not None:
                            state = observe(samples, state)
                    delta, state = update(g, state, lr)
                    theta = theta + delta
                    t += 1
        except KeyboardInterrupt:
            self.position = (t, theta)
            raise

    def _minibatch_loop(self, theta: np.ndarray) -> None:
        """Minibatch steps: each epoch visits every sample once, in batches of ``batch_size``
        (the last batch may be smaller), reshuffled each epoch if ``shuffle`` (each member
        with its own seed). A step uses its batch's mean gradient −(2/|B|) A_Bᵀ(b_B − A_B θ);
        the convergence tests use the full one."""
        A, b = self.work.A, self.work.b[:, np.newaxis]
        n, size = A.shape[0], self.settings.batch_size
        grad_matrix = A.T * (-2.0 / n)
        sample_matrix = A.T * -2.0
        steps_per_epoch = -(-n // size)
        rngs = [np.random.default_rng(seed) for seed in self.seeds]
        optimizer, monitor = self.optimizer, self.monitor
        state = optimizer.init(theta)
        delta = np.zeros_like(theta)
        t, next_event, batches = 0, 0, []
        try:  # zero cost until Ctrl-C; then the loop's position is kept for the record
            for first in range(0, self.settings.max_steps + 1, BLOCK):
                rates = self._rates(first)
                update, begin_epoch, observe = optimizer.update, optimizer.begin_epoch, optimizer.observe
                for i in range(len(rates)):
                    lr = rates[i]
                    k = t % steps_per_epoch
                    if k == 0:  # a new epoch: a new order, its batches sliced once
                        batches = self._epoch_batches(A, b, sample_matrix, rngs, size)
                        if begin_epoch is not None:
                            state = begin_epoch(sample_matrix * (b - A @ theta).swapaxes(-1, -2), state)
                    if t == next_event:
                        r = b - A @ theta
                        stopped = monitor.event(t, self.members, theta, r, grad_matrix @ r, delta, lr)
                        if stopped is not None:
                            if stopped.all():
                                return
                            theta, state, rates, delta = self._stop(stopped, theta, state, rates, delta)
                            rngs = [rng for rng, kept in zip(rngs, ~stopped) if kept]
                            batches = [tuple(part[~stopped] for part in batch) for batch in batches]
                            optimizer = self.optimizer
                            update, begin_epoch, observe = optimizer.update, optimizer.begin_epoch, optimizer.observe
                            lr = rates[i]
                        next_event = monitor.next_event
                    A_batch, b_batch, batch_grad, batch_samples = batches[k]
                    r_batch = b_batch - A_batch @ theta
                    if observe is not None:
                        state = observe(batch_samples * r_batch.swapaxes(-1, -2), state)
                    delta, state = update(batch_grad @ r_batch, state, lr)
                    theta = theta + delta
                    t += 1
        except KeyboardInterrupt:
            self.position = (t, theta)
            raise
        raise AssertionError("the monitor stops every run at max_steps")

    def _epoch_batches(self, A, b, sample_matrix, rngs, size):
        """(A_B, b_B, −(2/|B|) A_Bᵀ, sample columns of B) for every batch of the next epoch,
        with a leading member axis in a batch run (each member has its own order)."""
        n = A.shape[0]
        orders = [rng.permutation(n) if self.settings.shuffle else np.arange(n) for rng in rngs]
        order = np.stack(orders) if self.batched else orders[0]
        batches = []
        for j in range(0, n, size):
            rows = order[..., j:j + size]
            A_rows = A[rows]
            batches.append((A_rows, b[rows], A_rows.swapaxes(-1, -2) * (-2.0 / rows.shape[-1]),
                            np.swapaxes(sample_matrix.T[rows], -1, -2)))
        return batches


class _Monitor:
    """Everything the loop does only now and then, for every running member at once:
    record, test, decide which members stop."""

    def __init__(self, problem: Problem, scale: np.ndarray | None, settings: RunSettings,
                 progress: Progress | None, count: int, started: float):
        self.settings, self.progress, self.started = settings, progress, started
        self.scale = None if scale is None else scale[:, np.newaxis]
        A, b = problem.A, problem.b
        self.A, self.b = A, b[:, np.newaxis]
        self.n = A.shape[0]
        self.abs_A, self.abs_b = np.abs(A), np.abs(b)[:, np.newaxis]
        frobenius = float(np.linalg.norm(A))
        b_norm = float(np.linalg.norm(b))
        self.frobenius, self.b_norm = frobenius, b_norm
        self.theta_floor = b_norm / frobenius if frobenius > 0 else 0.0
        self.theta0 = problem.theta0[:, np.newaxis]
        self.rho_eps = rounding_factor(A.shape[1]) * EPS
        # G*: the gradient scale of the data and of the part of θ0 that A sees; the stopping
        # rule's bar grad_tol·G* ignores any part of θ0 in the null space of A
        self.data_scale = data_gradient_scale(A, b, problem.theta0)
        start_residual = b - A @ problem.theta0
        self.initial_residual = norm(start_residual)
        self.out_of_range = out_of_range(self.data_scale, bool(np.any(b) or np.any(A @ problem.theta0)),
                                         b_norm=norm(b), residual_norm=self.initial_residual)
        # stationary in the data's own sense, not merely within the rounding floor: a start far
        # out in the null space has a huge floor, and passing it is no evidence of a solution
        start_grad = A.T @ start_residual * (-2.0 / self.n)
        self.start_stationary = norm(start_grad) <= settings.grad_tol * self.data_scale
        self.initial_loss = loss(problem, problem.theta0)
        self.record_steps = log_spaced_steps(settings.max_steps, settings.records_per_decade).tolist()
        size = len(self.record_steps) + 1
        self.steps = np.zeros((count, size), dtype=np.int64)
        self.thetas = np.zeros((count, size, A.shape[1]))
        self.losses = np.zeros((count, size))
        self.rates = np.zeros((count, size))
        self.counts = np.zeros(count, dtype=np.int64)
        self.next_record_index = 0
        self.next_check = 0
        self.next_event = 0
        loss_scale = max(loss(problem, problem.theta0), b_norm * b_norm / self.n, np.finfo(np.float64).tiny)
        # capped, so that "loss ≤ threshold" is False for an infinite loss
        self.divergence_threshold = min(settings.divergence_factor * loss_scale, np.finfo(np.float64).max)
        self.status = [""] * count
        self.message = [""] * count
        self.stop_step = np.zeros(count, dtype=np.int64)
        self.wall_time = np.zeros(count)
        self.last_loss = np.full(count, math.nan)
        self.last_step_norm = np.full(count, math.nan)
        self.last_grad_norm = np.full(count, math.nan)

    def event(self, t: int, members: np.ndarray, theta: np.ndarray, r: np.ndarray, g: np.ndarray,
              delta: np.ndarray, lr: Any) -> np.ndarray | None:
        """Record and test at step t; return a mask of the members that stop (None if none)."""
        if theta.ndim == 2:  # one run: give it the member axis
            theta, r, g, delta = theta[np.newaxis], r[np.newaxis], g[np.newaxis], delta[np.newaxis]
        current_loss = _dots(r) / self.n
        self.last_loss[members] = current_loss
        if self.next_record_index < len(self.record_steps) and t == self.record_steps[self.next_record_index]:
            self._record(members, t, self._original(theta), current_loss, _per_member(lr, members))
            self.next_record_index += 1
        stopped = None
        if t == self.next_check or t == self.settings.max_steps:
            stopped = self._test(t, members, theta, r, g, delta, current_loss)
            self.next_check = t + max(self.settings.check_every, int(t * self.settings.check_fraction))
            if self.progress is not None and stopped is None:
                self.progress(t, float(current_loss[0]), self._original(theta)[0, :, 0])
        if stopped is not None:
            ended = members[stopped]
            last = self.steps[ended, np.maximum(self.counts[ended] - 1, 0)]
            missing = (self.counts[ended] == 0) | (last != t)
            if missing.any():
                self._record(ended[missing], t, self._original(theta[stopped][missing]),
                             current_loss[stopped][missing], _per_member(lr, members)[stopped][missing])
            self.stop_step[ended] = t
            self.wall_time[ended] = time.perf_counter() - self.started
            if stopped.all():
                return stopped
        self.next_event = min(self.next_check, self.settings.max_steps)
        if self.next_record_index < len(self.record_steps):
            self.next_event = min(self.next_event, self.record_steps[self.next_record_index])
        return stopped

    def _terms(self, theta: np.ndarray) -> np.ndarray:
        """G_t = (2/n)‖|A|ᵀ(|b| + |A||θ_t|)‖ per member: the size of the terms the gradient
        is computed from, whose rounding (ρ_d·eps·G_t) no computed gradient can go below."""
        return (2.0 / self.n) * norms(self.abs_A.T @ (self.abs_b + self.abs_A @ np.abs(theta)))

    def _gradient_bar(self, terms: np.ndarray) -> np.ndarray:
        """max(grad_tol·G*, ρ_d·eps·G_t): stationary relative to the data, or to rounding."""
        return np.maximum(self.settings.grad_tol * self.data_scale, self.rho_eps * terms)

    def _original(self, theta: np.ndarray) -> np.ndarray:
        """Points in the problem's coordinates (the optimizer may run in rescaled ones)."""
        return theta if self.scale is None else theta * self.scale

    def _record(self, members: np.ndarray, t: int, theta: np.ndarray, current_loss: np.ndarray, rates: np.ndarray) -> None:
        k = self.counts[members]
        self.steps[members, k], self.thetas[members, k] = t, theta[:, :, 0]
        self.losses[members, k], self.rates[members, k] = current_loss, rates
        self.counts[members] = k + 1

    def _test(self, t: int, members: np.ndarray, theta: np.ndarray, r: np.ndarray, g: np.ndarray,
              delta: np.ndarray, current_loss: np.ndarray) -> np.ndarray | None:
        # A finite loss implies finite iterates: a non-finite coordinate of θ makes Aθ
        # non-finite unless its column is zero, and a zero column's coordinate never moves.
        s = self.settings
        final = t >= s.max_steps
        if self.out_of_range:  # decided by the data alone, before the first step
            for member in members:
                self._stop(member, "out_of_range", f"stopped before the first step: {self.out_of_range}")
            return np.ones(len(members), dtype=bool)
        healthy = current_loss <= self.divergence_threshold  # False for NaN and ±inf too
        theta = self._original(theta)
        if self.scale is not None:
            g = g / self.scale  # ∇_θ f = ∇_θ' f / s
        # Fast path, on plain sums of squares: ‖A‖_F (‖b‖ + ‖A‖_F ‖θ‖) bounds G_t·n/2 from above,
        # so a gradient above the bar it gives fails the test without computing G_t. A square
        # that underflows makes a member a candidate (decided exactly below); one that
        # overflows cannot belong to a healthy member, whose loss is finite.
        grad_norm, theta_norm = np.sqrt(_dots(g)), np.sqrt(_dots(theta))
        rough = (2.0 / self.n) * self.frobenius * (self.b_norm + self.frobenius * theta_norm)
        candidates = healthy & (grad_norm <= self._gradient_bar(rough))
        if not final and healthy.all() and not candidates.any():  # the common case: nobody stops
            self.last_grad_norm[members] = grad_norm
            return None
        grad_norm, theta_norm = norms(g), norms(theta)  # scale-safe from here on
        non_finite = ~np.isfinite(current_loss)
        diverged = ~non_finite & ~healthy
        self.last_grad_norm[members[healthy]] = grad_norm[healthy]
        candidates |= healthy & final
        converged = np.zeros_like(healthy)
        if candidates.any():
            c = candidates
            grad_bound = self._gradient_bar(self._terms(theta[c]))
            step_norm = norms(self._original(delta[c])) if t > 0 else np.full(int(c.sum()), math.inf)
            travelled = norms(theta[c] - self.theta0)
            resolution = RESOLUTION_FACTOR * EPS * theta_norm[c]  # an update below this is lost to rounding
            step_bound = np.maximum(s.step_tol * np.maximum(travelled, self.theta_floor), resolution)
            self.last_step_norm[members[c]] = step_norm
            # A norm or bound that overflowed (θ beyond the supported range) must not pass as inf <= inf.
            grad_ok = (grad_norm[c] <= grad_bound) & (grad_bound < math.inf)
            step_ok = (step_norm <= step_bound) & (step_bound < math.inf)
            # a run whose loss did not fall got nowhere, unless it started at a stationary point
            progressed = (norms(r[c]) < self.initial_residual) | self.start_stationary  # scale-safe: no r·r
            converged[c] = grad_ok & step_ok & progressed
            for j, index in enumerate(np.flatnonzero(c)):
                if not (converged[index] or final):
                    continue
                tests = (f"step {step_norm[j]:.2e} (tol {step_bound[j]:.1e}), "
                         f"gradient {grad_norm[index]:.2e} (tol {grad_bound[j]:.1e})")
                member = members[index]
                if converged[index]:
                    exact = (" The residual is exactly 0.0: the iterate solves the equations in float64 and no "
                             "update moves it.") if not np.any(r[index]) else ""
                    self._stop(member, "converged", f"converged at step {t}: {tests}.{exact}")
                elif not grad_bound[j] < math.inf:
                    self._stop(member, "max_steps",
                               f"max_steps={t} reached; the convergence test cannot be evaluated: the gradient's "
                               f"terms |A|ᵀ(|b| + |A||θ|) overflow float64 at this iterate (‖θ‖ = "
                               f"{theta_norm[index]:.3g}); {tests}")
                elif step_ok[j] and step_norm[j] <= resolution[j]:
                    self._stop(member, "max_steps",
                               f"max_steps={t} reached, stalled: the updates ({step_norm[j]:.2e}) are below the "
                               f"float64 resolution of θ (‖θ‖ = {theta_norm[index]:.3g}) and are lost to rounding; "
                               f"{tests}")
                elif step_ok[j] and grad_ok[j]:
                    self._stop(member, "max_steps",
                               f"max_steps={t} reached, stalled at the starting loss: the tests hold but the loss "
                               f"never fell below its initial value {self.initial_loss:.3g}; {tests}")
                elif step_ok[j]:
                    self._stop(member, "max_steps",
                               f"max_steps={t} reached, stalled: the steps vanished before the gradient did "
                               f"(the schedule's total step size may be too small to reach a solution); {tests}")
                else:
                    self._stop(member, "max_steps", f"max_steps={t} reached while still moving: {tests}")
        for index in np.flatnonzero(non_finite):
            self._stop(members[index], "non_finite", (
                f"non-finite loss at step {t} ({current_loss[index]}): the iterates overflowed (the step size is "
                f"far too large) or the data are too large for their squares to be represented in float64"))
        for index in np.flatnonzero(diverged):
            self._stop(members[index], "diverged", (
                f"diverged at step {t}: loss {current_loss[index]:.3g} exceeded {s.divergence_factor:g} "
                f"times its initial scale; the step size is too large for this problem"))
        stopped = converged | non_finite | diverged | (final & candidates)
        return stopped if stopped.any() else None

    def _stop(self, member: int, status: str, message: str) -> None:
        self.status[member], self.message[member] = status, message

    def interrupt(self, members: np.ndarray, t: int, theta: Any) -> None:
        """Ctrl-C at step t: every member still running ends ``interrupted`` at its iterate θ
        (its last recorded iterate if the loop was caught between two consistent states)."""
        running = np.array([m for m in members if not self.status[m]], dtype=np.int64)
        if running.size == 0:
            return
        if theta is not None:
            theta = theta if theta.ndim == 3 else theta[np.newaxis]
        if theta is not None and theta.shape[0] == len(members) and np.array_equal(running, members):
            point = self._original(theta)
            r = self.b - self.A @ point
            self._record(running, t, point, _dots(r) / self.n, np.full(running.size, math.nan))
            self.last_loss[running] = _dots(r) / self.n
            kept = f"the iterate at step {t}"
        else:
            kept = "the last recorded iterate"
        for member in running:
            last = int(self.steps[member, self.counts[member] - 1]) if self.counts[member] else 0
            self.stop_step[member] = t if kept.startswith("the iterate") else last
            self._stop(member, "interrupted", f"interrupted (Ctrl-C) at step {t}; the record keeps {kept}")
        self.wall_time[running] = time.perf_counter() - self.started

    def result(self, j: int) -> RunResult:
        k = self.counts[j]
        trajectory = Trajectory(self.steps[j, :k].copy(), self.thetas[j, :k].copy(), self.losses[j, :k].copy(),
                                self.rates[j, :k].copy())
        return RunResult(
            theta=trajectory.theta[-1].copy(),
            status=self.status[j],
            message=self.message[j],
            steps=int(self.stop_step[j]),
            wall_time_s=float(self.wall_time[j]),
            final_loss=float(self.last_loss[j]),
            step_norm=float(self.last_step_norm[j]),
            grad_norm=float(self.last_grad_norm[j]),
            trajectory=trajectory,
        )


def _per_member(lr: Any, members: np.ndarray) -> np.ndarray:
    """The step sizes of this step, one per member: ``lr`` is a float or a (B, 1, 1) array."""
    return np.broadcast_to(np.reshape(lr, -1), members.shape)


def _dots(x: np.ndarray) -> np.ndarray:
    """x_jᵀ x_j for every member j of a (B, m, 1) stack, shape (B,): one BLAS dot per member."""
    return (x.swapaxes(-1, -2) @ x)[:, 0, 0]
