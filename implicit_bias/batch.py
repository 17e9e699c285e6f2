"""Many experiments, few loops: group the experiments of a sweep that can share one
vectorized loop, and run each group with :func:`implicit_bias.runner.run_batch`.

Members of a group must share
  * the dataset (its name and every parameter, so the same A, b and θ0),
  * the optimizer and each of its parameters that is not a number (``norm``,
    ``eps_placement``, ``bias_correction``, ``epoch_gradients``, ``diagonal``, …),
  * the run settings other than ``seed``.

They may differ in
  * the optimizer's numeric hyperparameters (ε, β1, β2, momentum, p, …), passed to the
    optimizer as (B, 1, 1) arrays,
  * the whole schedule (any schedule, any ``lr``: every member's step sizes come from its own
    schedule),
  * the seed, and everything used only after the run (``figure``, ``verdict_tol``, ``progress``).

Experiments that differ in anything else land in separate groups automatically; a group
of one is simply a batch of one. Each member's result is bit-for-bit what
:func:`implicit_bias.runner.run` gives for it alone (see the runner's docstring), except
``wall_time_s``, which is the time from the start of the group's loop to the member's stop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .build import Experiment
from .optimizers import OPTIMIZERS
from .runner import Interrupted, RunResult, log_spaced_steps, run_batch

log = logging.getLogger(__name__)


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a config value."""
    if isinstance(value, np.ndarray):
        return ("array", value.shape, tuple(value.ravel().tolist()))
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def group_key(experiment: Experiment) -> tuple:
    """Experiments with equal keys can run in one loop."""
    optimizer = experiment.optimizer
    fixed = {k: v for k, v in optimizer.params.items() if not _numeric(v)}
    return (
        experiment.dataset.name, _freeze(experiment.dataset.params),
        optimizer.name, tuple(sorted(optimizer.params)), _freeze(fixed),
        _freeze(experiment.settings._replace(seed=0)._asdict()),
    )


def same_run(a: Experiment, b: Experiment) -> bool:
    """Whether two built experiments make the same run: same group, schedule, optimizer
    values and seed, and the same data, compared exactly (inputs, not results)."""
    return (group_key(a) == group_key(b) and a.schedule.name == b.schedule.name
            and _freeze(a.schedule.params) == _freeze(b.schedule.params)
            and _freeze(a.optimizer.params) == _freeze(b.optimizer.params) and a.settings == b.settings
            and all(np.array_equal(x, y) for x, y in zip(a.problem, b.problem)))


def groups(experiments: Sequence[Experiment | None]) -> list[list[int]]:
    """Indices of the experiments that share a loop, in order of first appearance (None: skipped)."""
    found: dict[tuple, list[int]] = {}
    for index, experiment in enumerate(experiments):
        if experiment is not None:
            found.setdefault(group_key(experiment), []).append(index)
    return list(found.values())


def run_group(experiments: Sequence[Experiment]) -> list[RunResult]:
    """Run experiments that share a :func:`group_key` as one batch; one result each."""
    first = experiments[0]
    if any(group_key(e) != group_key(first) for e in experiments):
        raise ValueError("run_group needs experiments that share a group_key")
    factory = OPTIMIZERS[first.optimizer.name].factory
    stacked = {key: np.array([e.optimizer.params[key] for e in experiments], dtype=np.float64)[:, None, None]
               for key, value in first.optimizer.params.items() if _numeric(value)}

    def make_optimizer(members: np.ndarray):
        return factory(**{**first.optimizer.params, **{key: values[members] for key, values in stacked.items()}})

    return run_batch(first.problem, make_optimizer, [e.schedule.built for e in experiments], first.settings,
                     [e.settings.seed for e in experiments])


#: bytes of per-member arrays (trajectory and optimizer state) one loop may hold; a larger
#: group runs as several loops, one after the other
LOOP_MEMORY = 2 * 1024**3


def loops(experiments: Sequence[Experiment | None]) -> list[list[int]]:
    """The groups, each split into loops whose per-member arrays fit :data:`LOOP_MEMORY`.

    A member holds its recorded trajectory (one θ per recorded step) and a few state
    vectors: 8·d·(recorded steps + 8) bytes, e.g. 17 MB for d = 10 000 and 10^5 steps.
    """
    found = []
    for members in groups(experiments):
        first = experiments[members[0]]
        records = len(log_spaced_steps(first.settings.max_steps, first.settings.records_per_decade)) + 1
        per_member = 8 * first.problem.A.shape[1] * (records + 8)
        size = max(1, LOOP_MEMORY // per_member)
        found += [members[i:i + size] for i in range(0, len(members), size)]
    return found


class DataPool:
    """One Problem object per distinct dataset (name and parameters): :meth:`share` swaps an
    experiment's problem for the first equal one seen, so a sweep that builds its jobs one by
    one holds each dataset once, not once per job, at every moment."""

    def __init__(self) -> None:
        self.problems: dict[tuple, Any] = {}

    def share(self, experiment: Experiment | None) -> Experiment | None:
        if experiment is None:
            return None
        problem = self.problems.setdefault((experiment.dataset.name, _freeze(experiment.dataset.params)),
                                           experiment.dataset.built)
        return experiment._replace(dataset=experiment.dataset._replace(built=problem))


def share_data(experiments: Sequence[Experiment | None]) -> list[Experiment | None]:
    """The experiments with one Problem object per distinct dataset (see :class:`DataPool`)."""
    pool = DataPool()
    return [pool.share(e) for e in experiments]


class LoopInterrupted(Interrupted):
    """Ctrl-C during one loop of :func:`run_loops`: ``members`` are the loop's experiment
    indices and ``results`` their results (the runner's :class:`~implicit_bias.runner.Interrupted`:
    members that had stopped keep theirs, the others end ``interrupted``)."""

    def __init__(self, members: list[int], results: list[RunResult]):
        super().__init__(results)
        self.members = members


def run_loops(experiments: Sequence[Experiment | None]) -> Iterator[tuple[list[int], list[RunResult] | None]]:
    """Run every experiment (None: nothing to run), loop by loop, yielding each loop's
    member indices and results as soon as it ends. A loop that raises is logged in one line
    and yields None, so its members can be run one by one, where an error is recorded against
    the job that causes it. Ctrl-C in a loop raises :class:`LoopInterrupted` with that loop's
    members and results."""
    for members in loops(experiments):
        log.info("batched loop: %d run%s of %s", len(members), "" if len(members) == 1 else "s",
                 experiments[members[0]].optimizer.name)
        try:
            results = run_group([experiments[i] for i in members])
        except Interrupted as stop:
            raise LoopInterrupted(members, stop.results) from None
        except Exception as err:  # noqa: BLE001 - its jobs then run alone, like plain multirun jobs
            text = str(err).strip().splitlines()
            log.warning("a batched loop failed (%s%s); its %d jobs will run one by one", type(err).__name__,
                        f": {text[0]}" if text else "", len(members))
            log.debug("the batched loop's error", exc_info=True)
            results = None
        yield members, results


def run_all(experiments: Sequence[Experiment | None]) -> list[RunResult | None]:
    """Every experiment's result (None where there was nothing to run or its loop raised)."""
    results: list[RunResult | None] = [None] * len(experiments)
    for members, found in run_loops(experiments):
        for index, result in zip(members, found or []):
            results[index] = result
    return results
