"""Data-parallel full-batch training over MPI, with every gradient message counted.

Run by hand (``mpiexec`` comes with the ``mpich`` wheel of the ``mpi`` extra)::

    mpiexec -n 4 python -m implicit_bias.dataparallel --pattern ring_allreduce experiment=distributed
    mpiexec -n 5 python -m implicit_bias.dataparallel --pattern parameter_server experiment=distributed optimizer=adam

Any Hydra override of the ``implicit-bias`` command is accepted after the options. Rank 0
prints one line per result, including the difference from the single-process
:func:`implicit_bias.runner.run` on the same configuration.

The problem f(θ) = (1/N) Σ_j (b_j − a_jᵀθ)² is split by rows: worker w of n holds the rows of
block w of ``np.array_split(range(N), n)`` (contiguous blocks whose sizes differ by at most
one) and nothing else. At every step it computes its shard's contribution to the full
gradient,

    g_w = −(2/N) A_wᵀ (b_w − A_w θ),      ∇f(θ) = Σ_w g_w,

with the same arithmetic as the runner's full-batch step (the factor −2/N is applied to A_wᵀ
once, as the runner applies it to Aᵀ), and the workers synchronize the sum with one of four
patterns. Each worker then applies the configured optimizer's ``update(g, state, lr)`` to the
synchronized g, so every worker holds the same θ; this is checked bit for bit at the end.

Patterns (p parameters, n workers; per step):

``all_to_all``        every worker sends its g_w to every other worker: n(n − 1) messages of p values.
``parameter_server``  a separate server process (the last rank, so ``mpiexec -n n+1``) receives
                      the n contributions and sends the sum back: 2n messages of p values.
``ring_allreduce``    reduce-scatter then all-gather around the ring w → w + 1 (mod n), each in
                      n − 1 rounds in which every worker sends one chunk of p/n values:
                      2n(n − 1) messages of p/n values (Patarasuk & Yuan, J. Parallel Distrib.
                      Comput. 69, 2009; the Baidu/Horovod ring all-reduce).
``allreduce``         MPI's own ``Allreduce`` (the reference): its messages are internal to the
                      MPI library, invisible to the harness, and recorded as null.

The three hand-written patterns use point-to-point ``Isend``/``Irecv`` of numpy buffers, and
every send goes through :class:`CountingComm`, which counts it and adds its payload bytes as
it is sent; the counts are measured, never computed from the formulas (:func:`formula` gives
the formulas, for comparison).

**One summation order.** Floating-point addition is not associative, so the order of the sum
Σ_w g_w decides the last bits. The ring fixes an order: chunk c (``chunk_bounds``) is
accumulated starting at worker c + 1 and going around the ring, (((g_{c+1} + g_{c+2}) + …) +
g_c), indices mod n. The all-to-all workers and the parameter server, which hold every
contribution, sum each chunk in exactly that order (:func:`ring_order_sum`), so the three
patterns produce bit-identical gradients, hence bit-identical runs, for every n. MPI's
Allreduce sums in an order of the library's choosing.

**p not divisible by n.** ``ring_allreduce`` needs n | p and refuses other n with a
:class:`~implicit_bias.params.ConfigError`, rather than padding: the pattern's messages are
exactly p/n values each, so the measured counts and sizes can be compared with 2n(n − 1) · p/n
exactly; padding would send zeros as payload, and unequal chunks would make the message size
vary. The distributed experiment uses d = 840 = lcm(1, …, 8), divisible by every n ≤ 8.
The other patterns send whole vectors and accept any p (their chunks, used only to fix the
summation order, are ``np.array_split`` blocks).

**Stopping.** At check steps spaced as the runner's (max(check_every, ⌊check_fraction · t⌋)
steps apart), a run stops as ``converged`` when the runner's three tests hold (docs/theory.md
§5.1): ‖∇f(θ_t)‖ ≤ max(grad_tol·G*, ρ_d·eps·G_t), ‖Δ_t‖ ≤ max(step_tol · max(‖θ_t − θ0‖,
‖b‖/‖A‖_F), 4·eps·‖θ_t‖), and the loss fell (or θ0 was stationary); as ``out_of_range`` for
data outside float64's supported range; as ``diverged`` when the
loss exceeds divergence_factor · max(f(θ0), ‖b‖²/N), as ``non_finite`` when it is not finite,
and as ``max_steps`` at max_steps: the tests of ``implicit_bias/runner.py`` in their
scale-free form, with the same settings. The sums over samples in them (loss, ‖A‖_F², ‖b‖²,
the |A|ᵀ(…) vector) are gathered at check steps with MPI's ``Allgather`` and added in rank
order on every worker; worker 0 broadcasts the decision (``Bcast``) so that every process,
the server included, stops at the same step. This control traffic (one Allgather of p + 1
values and one Bcast per check) is not gradient synchronization and is not in the per-step
counts. The runner may refine its own test; the comparison with it (:func:`compare`) is
therefore made twice: with the runner's run as configured (each stops by its own test), and
step for step (the runner run for exactly as many steps, :func:`single_process_steps`).

**Waiting.** With more processes than cores (8 workers on 2 cores), MPICH's busy polling in a
blocking wait holds a core that the process it waits for needs: a ring step took 20 ms at
n = 8 on 2 cores. ``wait="yield"`` waits with ``MPI.Request.Testall`` and ``time.sleep(0)``
between tests (which gives up the core); ``"block"`` uses ``Waitall``; ``"auto"`` (default)
yields when the processes on this node outnumber its usable cores.

**On a cluster.** ``mpiexec`` (or ``srun --mpi=pmi2``) places the processes on nodes; nothing
here assumes one node. Each worker generates the (seeded) dataset and keeps only its rows;
with real data each worker would read only its rows. Messages between nodes then cost
latency + size/bandwidth, so the ring's 2(n − 1) rounds of p/n values move 2(n − 1)p/n values
per worker, independent of n for large n, while all-to-all moves (n − 1)p per worker and the
parameter server's link carries 2np.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .build import Experiment, build
from .params import ConfigError
from .problems import condition_number
from .tolerances import EPS, RESOLUTION_FACTOR, out_of_range, rounding_factor
from .tolerances import norm as tolerance_norm

PATTERNS = ("all_to_all", "parameter_server", "ring_allreduce", "allreduce")
#: patterns whose messages the harness sends itself, hence counts
COUNTED = ("all_to_all", "parameter_server", "ring_allreduce")
WAITS = ("auto", "yield", "block")
#: the config's keys that belong to a study, not to the run (``implicit_bias.build`` refuses them)
STUDY_KEYS = ("study", "distributed")
TAG = 7  # the tag of every gradient message
FLOAT_BYTES = np.dtype(np.float64).itemsize


# --------------------------------------------------------------------------- formulas, checks


def processes(pattern: str, workers: int) -> int:
    """MPI processes a run needs: the workers, plus the server for ``parameter_server``."""
    return workers + 1 if pattern == "parameter_server" else workers


def formula(pattern: str, workers: int, parameters: int) -> tuple[int | None, int | None]:
    """(messages, payload bytes) per synchronization step predicted for a pattern.

    all-to-all: n(n − 1) messages of p values; parameter server: 2n messages of p values;
    ring all-reduce: 2n(n − 1) messages of p/n values (n | p). (None, None) for MPI's own
    ``allreduce``, whose messages the harness cannot see. Bytes are 8 per float64 value.
    """
    n, p = workers, parameters
    if pattern == "all_to_all":
        return n * (n - 1), n * (n - 1) * p * FLOAT_BYTES
    if pattern == "parameter_server":
        return 2 * n, 2 * n * p * FLOAT_BYTES
    if pattern == "ring_allreduce":
        return 2 * n * (n - 1), 2 * n * (n - 1) * (p // n) * FLOAT_BYTES
    return None, None


def chunk_bounds(parameters: int, workers: int) -> np.ndarray:
    """Boundaries of the n chunks of a p-vector (``np.array_split``'s: p/n each when n | p)."""
    sizes = np.full(workers, parameters // workers)
    sizes[: parameters % workers] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def ring_order_sum(contributions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Σ_w contributions[w], chunk c summed in the ring all-reduce's order.

    Chunk c = [bounds[c], bounds[c + 1]) is accumulated as (((x_{c+1} + x_{c+2}) + …) + x_c),
    indices mod n: the order in which the ring's reduce-scatter adds it up. Summing in this
    order makes every pattern's result bit-identical to the ring's.
    """
    n = contributions.shape[0]
    total = np.empty(contributions.shape[1])
    for c in range(n):
        lo, hi = bounds[c], bounds[c + 1]
        acc = contributions[(c + 1) % n, lo:hi].copy()
        for k in range(2, n + 1):
            acc += contributions[(c + k) % n, lo:hi]
        total[lo:hi] = acc
    return total


def _hooks(optimizer: Any) -> list[str]:
    return [hook for hook in ("begin_epoch", "observe", "reparametrize") if getattr(optimizer, hook) is not None]


def data_parallel_optimizers() -> tuple[list[str], list[str]]:
    """(usable, refused) optimizer names: refused ones need per-sample gradients of every
    sample (epoch hooks) or a rescaling computed from all of A, which one shard cannot give."""
    from importlib import resources

    import yaml

    from .optimizers import OPTIMIZERS
    from .params import build_from

    usable, refused = [], []
    for entry in sorted(resources.files("implicit_bias.conf").joinpath("optimizer").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        node = {k: v for k, v in yaml.safe_load(entry.read_text()).items() if k != "defaults"}
        try:
            name, _, built = build_from("optimizer", OPTIMIZERS, node)
        except ConfigError:
            continue
        (refused if _hooks(built) else usable).append(name)
    return usable, refused


def check_setup(experiment: Experiment, pattern: str, workers: Any) -> None:
    """Refuse, with one line, what a data-parallel run cannot do (before any process starts).

    Raises :class:`~implicit_bias.params.ConfigError` for: an unknown pattern; workers not an
    int ≥ 1; more workers than samples (a worker without rows); ``ring_allreduce`` with p not
    divisible by n; minibatch steps (data-parallel steps here are full batch); an optimizer
    with per-sample or rescaling hooks.
    """
    if pattern not in PATTERNS:
        raise ConfigError(f"The 'pattern' of a data-parallel run must be one of {', '.join(PATTERNS)}. "
                          f"Got {pattern!r} instead.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"The number of workers n of a data-parallel run must be an int in [1, inf). "
                          f"Got {workers!r} instead.")
    samples, parameters = experiment.problem.A.shape
    if workers > samples:
        raise ConfigError(f"The number of workers n must be at most the number of samples N = {samples} of dataset "
                          f"{experiment.dataset.name!r} (every worker holds at least one row). Got n = {workers} instead.")
    if pattern == "ring_allreduce" and parameters % workers:
        raise ConfigError(f"The number of workers n of pattern 'ring_allreduce' must divide the number of parameters "
                          f"p = {parameters} (messages of p/n values; 840 = lcm(1..8) suits every n ≤ 8). "
                          f"Got n = {workers} instead.")
    size = experiment.settings.batch_size
    if size is not None and size < samples:
        raise ConfigError(f"The 'batch_size' parameter of a data-parallel run must be null or at least N = {samples} "
                          f"(full-batch steps). Got {size} instead.")
    hooks = _hooks(experiment.optimizer.built)
    if hooks:
        usable, refused = data_parallel_optimizers()
        raise ConfigError(f"The 'optimizer' of a data-parallel run must be one of {', '.join(usable)} "
                          f"({', '.join(refused)} need the gradients of every sample or all of A: {', '.join(hooks)}). "
                          f"Got {experiment.optimizer.name!r} instead.")


def build_run_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The composed config without the study's keys: what :func:`implicit_bias.build.build` takes."""
    return {key: value for key, value in config.items() if key not in STUDY_KEYS}


# --------------------------------------------------------------------------- communication


class CountingComm:
    """A communicator whose point-to-point sends are counted and sized as they are sent.

    ``messages`` and ``bytes`` (payload: the buffer's ``nbytes``) grow by one send's worth at
    every ``Send``/``Isend``; receives pass through.
    """

    def __init__(self, comm: Any):
        self.comm = comm
        self.messages = 0
        self.bytes = 0

    def Isend(self, buffer: np.ndarray, dest: int, tag: int = TAG) -> Any:
        self.messages += 1
        self.bytes += buffer.nbytes
        return self.comm.Isend(buffer, dest, tag)

    def Send(self, buffer: np.ndarray, dest: int, tag: int = TAG) -> None:
        self.messages += 1
        self.bytes += buffer.nbytes
        self.comm.Send(buffer, dest, tag)

    def Irecv(self, buffer: np.ndarray, source: int, tag: int = TAG) -> Any:
        return self.comm.Irecv(buffer, source, tag)


def make_wait(policy: str):
    """``wait(requests)``: ``Waitall``, or (``yield``) test and give up the core until done."""
    from mpi4py import MPI

    if policy == "block":
        return MPI.Request.Waitall

    def wait(requests: list) -> None:
        while not MPI.Request.Testall(requests):
            time.sleep(0)  # a real yield: the process we wait for may need this core

    return wait


def resolve_wait(policy: str, world: Any) -> str:
    """``auto``: ``yield`` when this node's processes outnumber its usable cores, else ``block``."""
    if policy != "auto":
        return policy
    from mpi4py import MPI

    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    on_node = local.Get_size()
    local.Free()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return "yield" if on_node > cores else "block"


class AllToAll:
    """Every worker sends its contribution to every other one; each sums all n in ring order."""

    def __init__(self, comm: CountingComm, rank: int, workers: int, parameters: int, wait):
        self.comm, self.rank, self.n, self.wait = comm, rank, workers, wait
        self.contributions = np.empty((workers, parameters))
        self.bounds = chunk_bounds(parameters, workers)

    def __call__(self, local: np.ndarray) -> np.ndarray:
        others = [w for w in range(self.n) if w != self.rank]
        requests = [self.comm.Irecv(self.contributions[w], w) for w in others]
        requests += [self.comm.Isend(local, w) for w in others]
        self.contributions[self.rank] = local
        self.wait(requests)
        return ring_order_sum(self.contributions, self.bounds)


class ParameterServerWorker:
    """A worker's side: send the contribution to the server, receive the sum."""

    def __init__(self, comm: CountingComm, server: int, parameters: int, wait):
        self.comm, self.server, self.wait = comm, server, wait
        self.parameters = parameters

    def __call__(self, local: np.ndarray) -> np.ndarray:
        total = np.empty(self.parameters)
        requests = [self.comm.Isend(local, self.server), self.comm.Irecv(total, self.server)]
        self.wait(requests)
        return total


class ParameterServer:
    """The server: receive the n contributions, sum them in ring order, send the sum to each."""

    def __init__(self, comm: CountingComm, workers: int, parameters: int, wait):
        self.comm, self.n, self.wait = comm, workers, wait
        self.contributions = np.empty((workers, parameters))
        self.bounds = chunk_bounds(parameters, workers)

    def serve(self) -> None:
        self.wait([self.comm.Irecv(self.contributions[w], w) for w in range(self.n)])
        total = ring_order_sum(self.contributions, self.bounds)
        self.wait([self.comm.Isend(total, w) for w in range(self.n)])


class RingAllReduce:
    """Reduce-scatter then all-gather around the ring w → w + 1 (mod n).

    Reduce-scatter, round s = 0 … n − 2: worker w sends chunk (w − s − 1) mod n, its partial
    sum so far, to w + 1, receives chunk (w − s − 2) mod n from w − 1 and adds its own part to
    it. After n − 1 rounds worker w holds chunk w summed over all workers, accumulated from
    worker w + 1 around the ring. All-gather, round s: worker w sends chunk (w − s) mod n to
    w + 1 and stores chunk (w − s − 1) mod n received from w − 1, unchanged.
    """

    def __init__(self, comm: CountingComm, rank: int, workers: int, parameters: int, wait):
        self.comm, self.rank, self.n, self.wait = comm, rank, workers, wait
        self.bounds = chunk_bounds(parameters, workers)
        self.inbox = np.empty(parameters // workers)

    def __call__(self, local: np.ndarray) -> np.ndarray:
        n, w, bounds = self.n, self.rank, self.bounds
        right, left = (w + 1) % n, (w - 1) % n
        acc = local.copy()
        for s in range(n - 1):
            send, receive = (w - s - 1) % n, (w - s - 2) % n
            lo, hi = bounds[receive], bounds[receive + 1]
            self.wait([self.comm.Isend(acc[bounds[send]:bounds[send + 1]], right), self.comm.Irecv(self.inbox, left)])
            acc[lo:hi] = self.inbox + local[lo:hi]  # the partial sum so far, then this worker's part
        for s in range(n - 1):
            send, receive = (w - s) % n, (w - s - 1) % n
            self.wait([self.comm.Isend(acc[bounds[send]:bounds[send + 1]], right),
                       self.comm.Irecv(acc[bounds[receive]:bounds[receive + 1]], left)])
        return acc


class MPIAllreduce:
    """MPI's own ``Allreduce`` (non-blocking, so that the wait policy applies to it too)."""

    def __init__(self, comm: Any, parameters: int, wait):
        from mpi4py import MPI

        self.comm, self.parameters, self.wait, self.sum = comm, parameters, wait, MPI.SUM

    def __call__(self, local: np.ndarray) -> np.ndarray:
        total = np.empty(self.parameters)
        self.wait([self.comm.Iallreduce(local, total, self.sum)])
        return total


# --------------------------------------------------------------------------- the run


def _dot(x: np.ndarray) -> float:
    return float((x.T @ x)[0, 0])


def _rank_order_sum(rows: np.ndarray) -> np.ndarray:
    total = rows[0].copy()
    for row in rows[1:]:
        total += row
    return total


def train(world: Any, experiment: Experiment, pattern: str, wait_policy: str = "auto") -> dict[str, Any] | None:
    """Run ``experiment`` data-parallel on the processes of ``world`` (an mpi4py communicator).

    Every process calls this. ``parameter_server`` uses the last rank as the server and the
    others as workers; the other patterns use every rank as a worker. Returns the run's
    record on rank 0 and None elsewhere. Raises ConfigError (on every rank, before any
    message) for a setup :func:`check_setup` refuses.
    """
    from mpi4py import MPI

    size, rank = world.Get_size(), world.Get_rank()
    workers = size - 1 if pattern == "parameter_server" else size
    if pattern == "parameter_server" and workers < 1:
        raise ConfigError("The pattern 'parameter_server' needs at least 2 processes (n workers and a server: "
                          "mpiexec -n n+1). Got 1 process instead.")
    check_setup(experiment, pattern, workers)
    policy = resolve_wait(wait_policy, world)
    wait = make_wait(policy)
    problem, settings = experiment.problem, experiment.settings
    samples, parameters = problem.A.shape
    is_server = pattern == "parameter_server" and rank == workers
    counting = CountingComm(world)
    team = world.Split(0 if not is_server else MPI.UNDEFINED, rank)  # the workers' communicator

    if is_server:
        synchronize = ParameterServer(counting, workers, parameters, wait)
        rows = np.arange(0)
    else:
        rows = np.array_split(np.arange(samples), workers)[rank]
        if pattern == "all_to_all":
            synchronize = AllToAll(counting, rank, workers, parameters, wait)
        elif pattern == "parameter_server":
            synchronize = ParameterServerWorker(counting, workers, parameters, wait)
        elif pattern == "ring_allreduce":
            synchronize = RingAllReduce(counting, rank, workers, parameters, wait)
        else:
            synchronize = MPIAllreduce(team, parameters, wait)
    # The shard: this worker's rows only; the full problem is not kept.
    A, b = problem.A[rows].copy(), problem.b[rows, np.newaxis].copy()
    theta = problem.theta0[:, np.newaxis].copy()
    del problem
    grad_matrix = A.T * (-2.0 / samples)  # −(2/N) A_wᵀ, as the runner scales Aᵀ
    abs_A, abs_b = np.abs(A), np.abs(b)

    def gather_sum(values: np.ndarray) -> np.ndarray:
        """Σ over workers of ``values``, added in rank order on every worker (control traffic)."""
        gathered = np.empty((workers, values.size))
        wait([team.Iallgather(values, gathered)])
        return _rank_order_sum(gathered)

    def decide(stop_code: int) -> int:
        """Worker 0's decision, broadcast to every process (the server included)."""
        code = np.array([stop_code], dtype=np.int64)
        wait([world.Ibcast(code, root=0)])
        return int(code[0])

    wait([world.Ibarrier()])
    started = time.perf_counter()
    sync_time, per_sync = 0.0, set()
    t, next_check, status, message = 0, 0, "", ""
    if is_server:
        while True:
            before = counting.messages
            tick = time.perf_counter()
            synchronize.serve()
            sync_time += time.perf_counter() - tick
            per_sync.add(counting.messages - before)
            if t == next_check or t == settings.max_steps:
                next_check = t + max(settings.check_every, int(t * settings.check_fraction))
                if decide(0):
                    break
            t += 1
    else:
        optimizer = experiment.optimizer.built
        schedule = experiment.schedule.built
        norms = gather_sum(np.array([float(np.sum(b * b)), float(np.sum(A * A))]))
        b_norm, frobenius = math.sqrt(norms[0]), math.sqrt(norms[1])
        theta_floor = b_norm / frobenius if frobenius > 0 else 0.0
        # the runner's scales (docs/theory.md §5.1), summed over the shards in rank order:
        # G* = (2/N)‖|A|ᵀ(|b| + |Aθ0|)‖ and the start's own gradient and residual
        start = gather_sum((abs_A.T @ (abs_b + np.abs(A @ theta))).reshape(-1))
        rule = _Rule(settings, data_scale=(2.0 / samples) * tolerance_norm(start), theta0=theta.copy(),
                     theta_floor=theta_floor, rho_eps=rounding_factor(parameters) * EPS)
        threshold = math.inf
        state = optimizer.init(theta)
        delta = np.zeros_like(theta)
        rates: list[float] = []
        while True:
            if t % 4096 == 0:  # the schedule, evaluated in blocks as the runner does
                rates = schedule(np.arange(t, min(t + 4096, settings.max_steps + 1))).tolist()
            lr = rates[t % 4096]
            r = b - A @ theta
            local = (grad_matrix @ r).reshape(-1)
            before = counting.messages
            tick = time.perf_counter()
            g = synchronize(local).reshape(-1, 1)
            sync_time += time.perf_counter() - tick
            per_sync.add(counting.messages - before)
            if t == next_check or t == settings.max_steps:
                next_check = t + max(settings.check_every, int(t * settings.check_fraction))
                partial = np.concatenate([[_dot(r)], (abs_A.T @ (abs_b + abs_A @ np.abs(theta))).reshape(-1)])
                total = gather_sum(partial)
                loss, terms = total[0] / samples, total[1:]
                if t == 0:
                    scale = max(loss, b_norm * b_norm / samples, np.finfo(np.float64).tiny)
                    threshold = min(settings.divergence_factor * scale, np.finfo(np.float64).max)
                    rule.start(loss, g, b_norm)
                status, message = rule.test(t, loss, threshold, g, theta, delta, terms, samples)
                if decide(1 if status else 0):
                    break
            delta, state = optimizer.update(g, state, lr)
            theta = theta + delta
            t += 1
    loop_time = time.perf_counter() - started

    # Every process reports its counts; the workers compare their θ bit for bit.
    counts = world.gather((counting.messages, counting.bytes, sorted(per_sync), sync_time, loop_time), root=0)
    if is_server:
        team_thetas = None
    else:
        team_thetas = np.empty((workers, parameters))
        wait([team.Iallgather(theta.reshape(-1).copy(), team_thetas)])
        team.Free()
    if rank != 0:
        return None
    syncs = t + 1  # a synchronization at every step 0..t: the test at t needs the full gradient
    constant = all(len(c[2]) == 1 for c in counts)
    messages = sum(c[0] for c in counts)
    payload = sum(c[1] for c in counts)
    counted = pattern in COUNTED
    return {
        "pattern": pattern,
        "workers": workers,
        "processes": size,
        "parameters": parameters,
        "samples": samples,
        "shard_rows": [len(part) for part in np.array_split(np.arange(samples), workers)],
        "messages_per_step": messages // syncs if counted and constant else None,
        "bytes_per_step": payload // syncs if counted and constant else None,
        "messages_total": messages if counted else None,
        "bytes_total": payload if counted else None,
        "synchronizations": syncs,
        "counts_constant_per_step": constant if counted else None,
        "status": status,
        "message": message,
        "steps": t,
        "limit": theta.reshape(-1).tolist(),
        "ranks_identical": bool(np.all(team_thetas == team_thetas[0])),
        "step_time_s": loop_time / syncs,
        "sync_time_s": sync_time / syncs,
        "loop_time_s": loop_time,
        "wait": policy,
        "mpi_library": " ".join(MPI.Get_library_version().splitlines()[0].split()),
    }


class _Rule:
    """The runner's convergence test (``implicit_bias.runner``, docs/theory.md §5.1) on the
    quantities the workers gather: the synchronized gradient, and the sums over the shards of
    the residual's square and of |A|ᵀ(|b| + |A||θ|)."""

    def __init__(self, settings: Any, data_scale: float, theta0: np.ndarray, theta_floor: float, rho_eps: float):
        self.settings, self.data_scale, self.theta0 = settings, data_scale, theta0
        self.theta_floor, self.rho_eps = theta_floor, rho_eps
        self.initial_residual, self.start_stationary, self.out_of_range = math.inf, False, ""

    def start(self, loss: float, g: np.ndarray, b_norm: float) -> None:
        samples_loss = loss  # (1/N)‖r0‖²
        self.initial_loss = samples_loss
        self.start_stationary = tolerance_norm(g) <= self.settings.grad_tol * self.data_scale
        residual = math.sqrt(samples_loss) if math.isfinite(samples_loss) else math.inf
        self.out_of_range = out_of_range(self.data_scale, b_norm > 0 or residual > 0, b_norm, residual)

    def test(self, t: int, loss: float, threshold: float, g: np.ndarray, theta: np.ndarray, delta: np.ndarray,
             terms: np.ndarray, samples: int) -> tuple[str, str]:
        """(status, message) at check step t, or ("", "") to go on."""
        settings = self.settings
        if self.out_of_range:
            return "out_of_range", f"stopped before the first step: {self.out_of_range}"
        final = t >= settings.max_steps
        if not math.isfinite(loss):
            return "non_finite", f"non-finite loss at step {t} ({loss})"
        if not loss <= threshold:
            return "diverged", (f"diverged at step {t}: loss {loss:.3g} exceeded {settings.divergence_factor:g} "
                                f"times its initial scale")
        grad_norm = tolerance_norm(g)
        grad_bound = max(settings.grad_tol * self.data_scale, self.rho_eps * (2.0 / samples) * tolerance_norm(terms))
        step_norm = tolerance_norm(delta) if t > 0 else math.inf
        theta_norm = tolerance_norm(theta)
        resolution = RESOLUTION_FACTOR * EPS * theta_norm
        step_bound = max(settings.step_tol * max(tolerance_norm(theta - self.theta0), self.theta_floor), resolution)
        grad_ok = grad_norm <= grad_bound < math.inf
        step_ok = step_norm <= step_bound < math.inf
        progressed = loss < self.initial_loss or self.start_stationary
        tests = f"step {step_norm:.2e} (tol {step_bound:.1e}), gradient {grad_norm:.2e} (tol {grad_bound:.1e})"
        if grad_ok and step_ok and progressed:
            return "converged", f"converged at step {t}: {tests}."
        if final:
            how = "stalled" if step_ok else "while still moving"
            return "max_steps", f"max_steps={t} reached, {how}: {tests}"
        return "", ""


# --------------------------------------------------------------------------- single process


def single_process(experiment: Experiment) -> dict[str, Any]:
    """The harness's own single-process run (:func:`implicit_bias.runner.run`) of the experiment."""
    from .runner import run

    result = run(experiment.problem, experiment.optimizer.built, experiment.schedule.built, experiment.settings)
    return {"status": result.status, "steps": result.steps, "limit": result.theta.tolist(),
            "wall_time_s": result.wall_time_s}


def single_process_steps(experiment: Experiment, steps: int) -> dict[str, Any]:
    """:func:`implicit_bias.runner.run` for exactly ``steps`` steps (both tolerances 0, so its
    test cannot pass earlier): the single-process iterate after the same number of updates."""
    from .runner import run

    settings = experiment.settings._replace(max_steps=max(steps, 1), grad_tol=0.0, step_tol=0.0)
    result = run(experiment.problem, experiment.optimizer.built, experiment.schedule.built, settings)
    return {"status": result.status, "steps": result.steps, "limit": result.theta.tolist()}


def compare(limit: Sequence[float], steps: int, reference: Mapping[str, Any], same_step: Mapping[str, Any] | None,
            experiment: Experiment) -> dict[str, Any]:
    """A data-parallel limit against the single-process runs: differences and the tolerance.

    ``reference`` is :func:`single_process` (the runner's run as configured), ``same_step``
    :func:`single_process_steps` for the data-parallel run's ``steps`` (or None).

    difference = ‖θ_dp − θ_sp‖∞, relative to max(‖θ_sp‖∞, ‖θ0‖∞) (1 if both are 0). The runs
    add the same gradient terms in different orders (the runner's BLAS product over all rows
    against per-shard products summed in ring order), so they differ by rounding at every
    step, and each stops where its own test holds: a gradient below grad_tol relative to the
    size of its terms. On a consistent system that bounds each limit's relative distance from
    the exact limit both approach by about grad_tol · κ(A)² (the gradient is AᵀA times the
    error, and AᵀA's smallest nonzero eigenvalue is κ² below its largest), so

        tolerance = max(verdict_tol, 4 · grad_tol · κ(A)²)     (relative)

    (4: two limits, with a factor 2 to spare). Step for step there is no stopping rule in the
    way: ``same_step_difference`` is rounding alone, and 0 for one worker, whose arithmetic is
    the runner's (``bit_identical_same_step``).
    """
    mine, theirs = np.asarray(limit, dtype=float), np.asarray(reference["limit"], dtype=float)
    theta0 = experiment.problem.theta0
    difference = float(np.max(np.abs(mine - theirs)))
    scale = max(float(np.max(np.abs(theirs))), float(np.max(np.abs(theta0)))) or 1.0
    kappa = condition_number(experiment.problem) or 1.0
    tolerance = max(experiment.verdict_tol, 4.0 * experiment.settings.grad_tol * kappa * kappa)
    relative = difference / scale
    same = None
    if same_step is not None and same_step["steps"] == steps:
        same = np.asarray(same_step["limit"], dtype=float)
    return {
        "single_process": {"status": reference["status"], "steps": reference["steps"]},
        "difference_from_single_process": difference,
        "relative_difference": relative,
        "tolerance": tolerance,
        "matches_single_process": bool(relative <= tolerance),
        "same_step_difference": None if same is None else float(np.max(np.abs(mine - same))),
        "bit_identical_same_step": None if same is None else bool(np.array_equal(mine, same)),
    }


# --------------------------------------------------------------------------- command line


def _compose(overrides: Sequence[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(version_base="1.3", config_module="implicit_bias.conf"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m implicit_bias.dataparallel", description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="ring_allreduce", help="one of " + ", ".join(PATTERNS))
    parser.add_argument("--config", help="a JSON file with the composed config (instead of overrides)")
    parser.add_argument("--out", help="write the record (rank 0) to this JSON file")
    parser.add_argument("--wait", default="auto", choices=WAITS)
    parser.add_argument("--no-compare", action="store_true", help="skip the single-process run on rank 0")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for implicit-bias")
    args = parser.parse_args(argv)

    import mpi4py

    mpi4py.rc.thread_level = "single"  # one Python thread per process
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    try:
        config = json.loads(Path(args.config).read_text()) if args.config else _compose(args.overrides)
        experiment = build(build_run_config(config))
        record = train(world, experiment, args.pattern, args.wait)
    except ConfigError as err:  # every rank refuses the same input before any message
        if world.Get_rank() == 0:
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except BaseException:  # one rank failing must not leave the others waiting
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        world.Abort(1)
        raise
    if record is None:
        return 0
    if not args.no_compare:
        same_step = single_process_steps(experiment, record["steps"])
        record.update(compare(record["limit"], record["steps"], single_process(experiment), same_step, experiment))
    if args.out:
        from .results import write_json

        write_json(Path(args.out), record)
    else:
        counts = ("not visible (MPI's own Allreduce)" if record["messages_per_step"] is None else
                  f"{record['messages_per_step']} messages, {record['bytes_per_step']} bytes")
        expected = formula(record["pattern"], record["workers"], record["parameters"])
        print(f"{record['pattern']}: {record['workers']} workers ({record['processes']} processes), "
              f"p = {record['parameters']}: per step {counts} (formula: {expected[0]} messages, {expected[1]} bytes)")
        print(f"{record['status']} after {record['steps']} steps; {1e6 * record['step_time_s']:.0f} µs/step "
              f"({1e6 * record['sync_time_s']:.0f} µs in synchronization, wait: {record['wait']}); "
              f"ranks identical: {record['ranks_identical']}")
        if "difference_from_single_process" in record:
            reference = record["single_process"]
            print(f"single-process run ({reference['status']} after {reference['steps']} steps): difference "
                  f"{record['difference_from_single_process']:.3g} (relative {record['relative_difference']:.3g}, "
                  f"tolerance {record['tolerance']:.1g}); after the same {record['steps']} steps: difference "
                  f"{record['same_step_difference']}, bit-identical: {record['bit_identical_same_step']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
