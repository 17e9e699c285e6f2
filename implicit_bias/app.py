"""The ``implicit-bias`` command: config → build → run → compare → record → summarize.

Single runs stop on bad input with one line on stderr (exit code 2). In a multirun a job
never takes the sweep down: bad input or an unexpected error becomes that job's record
(status ``invalid_config`` or ``error``) and the other jobs go on.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra_plugins.implicit_bias_batched.batched_sweeper import BatchedSweeper
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .batch import same_run
from .build import Experiment, build
from .params import ConfigError
from .predictions import compare, predict, verdict_tolerance
from .problems import condition_number
from .references import distances, interpolants
from .results import FIGURE_FILE, RESULT_FILE, TRAJECTORY_FILE, atomic_write, failure_record, make_record, write_json, write_trajectory
from .runner import RunResult, run
from .summary import describe, run_summary

log = logging.getLogger("implicit_bias")


class ProgressLog:
    """Log step, loss and distance to the prediction at most every ``every_s`` seconds."""

    def __init__(self, prediction: np.ndarray | None, every_s: float):
        self.prediction, self.every_s = prediction, every_s
        self.last = time.perf_counter()

    def __call__(self, t: int, loss: float, theta: np.ndarray) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        self.last = now
        distance = "" if self.prediction is None else f", distance to prediction {np.max(np.abs(theta - self.prediction)):.3e}"
        log.info("  step %d: loss %.3e%s", t, loss, distance)


def execute(experiment: Experiment, out_dir: Path, overrides: list[str], show_progress: bool = False,
            result: RunResult | None = None) -> dict[str, Any]:
    """Run one built experiment (unless its ``result`` is given: the batched sweeper ran it
    already) and write its records into ``out_dir``; return the record."""
    prediction = predict(experiment.optimizer.name, experiment.optimizer.params, experiment.problem,
                         experiment.settings.batch_size)
    if result is None:
        progress = ProgressLog(prediction.point, experiment.progress_every_s) if show_progress else None
        result = run(experiment.problem, experiment.optimizer.built, experiment.schedule.built, experiment.settings,
                     progress)
    kappa = condition_number(experiment.problem)
    tol = verdict_tolerance(experiment.verdict_tol, experiment.settings.grad_tol, kappa)
    comparison = compare(result.theta, prediction, result.status, tol, experiment.problem.theta0)
    nearby = distances(result.theta, interpolants(experiment.problem))
    record = make_record(experiment, result, prediction, comparison, nearby, overrides)
    record.update(condition_number=kappa, verdict_tol_used=tol)
    write_trajectory(out_dir / TRAJECTORY_FILE, result, prediction)
    write_json(out_dir / RESULT_FILE, record)
    if experiment.figure:
        from .plotting import render_run

        error = f", error {comparison.error:.1e}" if comparison.error is not None and np.isfinite(comparison.error) else ""
        title = (
            f"{experiment.optimizer.name} · {describe(record['schedule'])} · {experiment.dataset.name}: "
            f"{result.status} after {result.steps} steps{error} ({comparison.verdict})"
        )
        png = render_run(experiment.problem, result.trajectory, result.theta, prediction, title, experiment.verdict_tol)
        atomic_write(out_dir / FIGURE_FILE, png)
    return record


def _refuse(err: ConfigError, multirun: bool, config: dict, overrides: list[str], out_dir: Path) -> None:
    """Bad input: one line and exit code 2 for a single run; a record for a multirun job."""
    if not multirun:
        print(f"implicit-bias: error: {err}", file=sys.stderr)
        sys.exit(2)
    log.error("invalid configuration: %s", err)
    write_json(out_dir / RESULT_FILE, failure_record(config, overrides, "invalid_config", str(err)))


def task(cfg: DictConfig, ran: tuple[Experiment, RunResult] | None = None) -> None:
    """One job: resolve, build, run, record. ``ran`` is the batched sweeper's (experiment,
    result) for this job: its result is used if the experiment is the one built here."""
    hydra_config = HydraConfig.get()
    out_dir = Path(hydra_config.runtime.output_dir)
    overrides = list(hydra_config.overrides.task)
    multirun = hydra_config.mode == RunMode.MULTIRUN
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:  # an interpolation that does not resolve
        unresolved = OmegaConf.to_container(cfg, resolve=False)
        refusal = ConfigError(f"The config does not resolve: {err}".splitlines()[0])
        return _refuse(refusal, multirun, unresolved, overrides, out_dir)
    if config.get("study") is not None:  # a study that is not one optimizer run (implicit_bias.studies)
        from .studies import run_study

        try:
            return run_study(config, out_dir)
        except ConfigError as err:
            return _refuse(err, multirun, config, overrides, out_dir)
    try:
        experiment = build(config)
    except ConfigError as err:
        return _refuse(err, multirun, config, overrides, out_dir)
    verbose = experiment.progress if experiment.progress is not None else not multirun
    result = None
    if ran is not None:
        if same_run(ran[0], experiment):
            result = ran[1]
        else:
            log.warning("this job's config builds differently here than in the batched loop; running it alone")
    try:
        record = execute(experiment, out_dir, overrides, show_progress=verbose, result=result)
    except Exception as err:
        if not multirun:
            raise
        log.exception("job failed")
        write_json(out_dir / RESULT_FILE, failure_record(config, overrides, "error", f"{type(err).__name__}: {err}"))
        return
    if verbose:
        log.info(run_summary(record, out_dir))


# Hydra finds plugins by walking the hydra_plugins namespace package, which an editable
# install's import hook does not let it list; registering the class is Hydra's public way.
Plugins.instance().register(BatchedSweeper)

main = hydra.main(version_base="1.3", config_path="pkg://implicit_bias.conf", config_name="config")(task)

if __name__ == "__main__":
    main()
