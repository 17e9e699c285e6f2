"""The ``implicit-bias`` command: config → build → run → compare → record → summarize.

Single runs stop on bad input with one line on stderr (exit code 2). In a multirun a job
never takes the sweep down: bad input or an unexpected error becomes that job's record
(status ``invalid_config`` or ``error``) and the other jobs go on.

Faults around records are one line on stderr, ``implicit-bias: error: ...``, never a
traceback, and the line says what was kept and where:

- a figure that cannot be drawn is a warning; the records are written before it and never
  change (exit code 0);
- Ctrl-C (exit code 130): a single run writes its record with status ``interrupted`` at the
  iterate it reached; a multirun keeps the jobs already recorded, records the running one as
  ``interrupted`` and writes the summary of what exists;
- a write that fails (disk full, permission denied) leaves no partial file (exit code 2);
- an output directory that is a file, lies under a file, is not writable, or already holds
  another run is refused before Hydra writes anything into it (exit code 2; the check is
  :class:`implicit_bias.summary.SummaryCallback`'s);
- a sweep that stops part-way (a parallel worker killed) still gets the summary of the jobs
  that exist, the others as ``missing`` rows (exit code 1).

Hydra prints a traceback for whatever escapes a run or a sweep unless ``HYDRA_FULL_ERROR``
is set, so :func:`main` sets it while Hydra runs and reports here instead. A user who sets
``HYDRA_FULL_ERROR=1`` gets the traceback of an unexpected error as before.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra_plugins.implicit_bias_batched.batched_sweeper import BatchedSweeper
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import summary
from .batch import same_run
from .build import Experiment, build
from .params import ConfigError
from .predictions import Prediction, judge, predict, verdict_fields
from .problems import condition_number
from .references import distances, interpolants
from .results import (
    FIGURE_FILE, RESULT_FILE, TRAJECTORY_FILE, RecordWriteError, atomic_write, failure_record, make_record, write_json,
    write_trajectory,
)
from .runner import Interrupted, RunResult, run
from .summary import describe, run_summary

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
FULL_ERROR = "HYDRA_FULL_ERROR"

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


#: files this process has written completely, for the line that says what a fault kept
written: list[Path] = []
#: whether the user asked for tracebacks (HYDRA_FULL_ERROR=1 before :func:`main` set it)
user_full_error = os.environ.get(FULL_ERROR) == "1"


def say(message: str) -> None:
    """One line on stderr: ``implicit-bias: error: MESSAGE``."""
    print(f"implicit-bias: error: {message}", file=sys.stderr, flush=True)


def first_line(err: BaseException) -> str:
    """``TypeName: first line of the message`` (some messages run over several lines)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _write(path: Path, write: Any, *args: Any) -> None:
    """``write(path, *args)``, then remember ``path`` as kept (see :data:`written`)."""
    write(path, *args)
    written.append(path)


def _record(experiment: Experiment, result: RunResult, prediction: Prediction, overrides: list[str],
            references: bool = True) -> dict[str, Any]:
    """The run's ``result.json`` content: the verdict (:func:`~implicit_bias.predictions.judge`)
    and, unless ``references`` is False, the distances to the reference interpolants."""
    kappa = condition_number(experiment.problem)
    points = interpolants(experiment.problem) if references else {}
    comparison = judge(experiment.problem, prediction, result.theta, result.status, steps=result.steps,
                       grad_norm=result.grad_norm, verdict_tol=experiment.verdict_tol,
                       grad_tol=experiment.settings.grad_tol, kappa=kappa, batch_size=experiment.settings.batch_size,
                       references=points)
    nearby = distances(result.theta, points)
    record = make_record(experiment, result, prediction, comparison, nearby, overrides)
    record.update(condition_number=kappa, **verdict_fields(comparison))
    return record


def write_run_figure(experiment: Experiment, result: RunResult, prediction: Prediction, record: dict[str, Any],
                     out_dir: Path) -> str | None:
    """Draw and write ``trajectory.png``; return why it could not be written, or None.

    Called after the records are on disk, and never raises (but on Ctrl-C): a figure that
    fails costs the run nothing but the figure.
    """
    try:
        from .plotting import render_run

        error = f", error {record['error']:.1e}" if record["error"] is not None else ""
        title = (
            f"{experiment.optimizer.name} · {describe(record['schedule'])} · {experiment.dataset.name}: "
            f"{result.status} after {result.steps} steps{error} ({record['verdict']})"
        )
        png = render_run(experiment.problem, result.trajectory, result.theta, prediction, title,
                         record.get("verdict_tolerance"))
        _write(out_dir / FIGURE_FILE, atomic_write, png)
    except Exception as err:  # noqa: BLE001 - any figure failure is reported, never fatal to the run
        log.debug("figure failed", exc_info=True)
        return f"figure {FIGURE_FILE} not written ({first_line(err)}); the records are complete"
    return None


def execute(experiment: Experiment, out_dir: Path, overrides: list[str], show_progress: bool = False,
            result: RunResult | None = None) -> dict[str, Any]:
    """Run one built experiment (unless its ``result`` is given: the batched sweeper ran it
    already) and write its records into ``out_dir``; return the record.

    ``trajectory.npz`` is written before ``result.json``, so a record on disk always has its
    trajectory; the figure comes last and its failure is a warning (the records stay as
    written). On Ctrl-C the run's record is written with status ``interrupted`` at the iterate
    it reached (no reference interpolants, no figure: those can take long, and the user asked
    to stop), then :class:`~implicit_bias.runner.Interrupted` is raised again.
    """
    prediction = predict(experiment.optimizer.name, experiment.optimizer.params, experiment.problem,
                         experiment.settings.batch_size)
    if result is None:
        progress = ProgressLog(prediction.point, experiment.progress_every_s) if show_progress else None
        try:
            result = run(experiment.problem, experiment.optimizer.built, experiment.schedule.built, experiment.settings,
                         progress)
        except Interrupted as stop:
            reached = stop.results[0]
            record = _record(experiment, reached, prediction, overrides, references=False)
            _write(out_dir / TRAJECTORY_FILE, write_trajectory, reached, prediction)
            _write(out_dir / RESULT_FILE, write_json, record)
            raise
    record = _record(experiment, result, prediction, overrides)
    _write(out_dir / TRAJECTORY_FILE, write_trajectory, result, prediction)
    _write(out_dir / RESULT_FILE, write_json, record)
    if experiment.figure:
        problem = write_run_figure(experiment, result, prediction, record, out_dir)
        if problem is not None:
            log.warning("warning: %s", problem)
    return record


def _kept(out_dir: Path) -> str:
    """'kept trajectory.npz and result.json in DIR', from the files this process wrote there."""
    names = [p.name for p in written if p.parent == out_dir]
    return f"kept {' and '.join(names)} in {out_dir}" if names else f"nothing was written to {out_dir}"


def _refuse(err: ConfigError, multirun: bool, config: dict, overrides: list[str], out_dir: Path) -> None:
    """Bad input: one line and exit code 2 for a single run; a record for a multirun job."""
    if not multirun:
        print(f"implicit-bias: error: {err}", file=sys.stderr)
        sys.exit(2)
    log.error("invalid configuration: %s", err)
    _write_failure(out_dir, failure_record(config, overrides, "invalid_config", str(err)))


def _write_failure(out_dir: Path, record: dict[str, Any]) -> None:
    """A multirun job's failure record; if even that cannot be written, one line in the log
    (the summary then shows the job as ``missing``)."""
    try:
        write_json(out_dir / RESULT_FILE, record)
    except RecordWriteError as err:
        log.error("job not recorded: %s", err)


def _unexpected(err: Exception, doing: str, multirun: bool, config: dict, overrides: list[str], out_dir: Path) -> None:
    """An error that is not bad input: that job's ``error`` record in a multirun (the other
    jobs go on); one line and exit code 1 for a single run (the traceback with
    HYDRA_FULL_ERROR=1, and always in the log at debug level)."""
    log.debug("unexpected error while %s", doing, exc_info=True)
    if not multirun:
        if user_full_error:
            raise err
        say(f"unexpected {first_line(err)} while {doing}; {_kept(out_dir)} "
            f"(set {FULL_ERROR}=1 for the traceback)")
        sys.exit(EXIT_FAILED)
    log.error("job failed while %s: %s (recorded as status error)", doing, first_line(err))
    _write_failure(out_dir, failure_record(config, overrides, "error", f"{type(err).__name__}: {err}"))


def task(cfg: DictConfig, ran: tuple[Experiment, RunResult] | None = None) -> None:
    """One job: resolve, build, run, record. ``ran`` is the batched sweeper's (experiment,
    result) for this job: its result is used if the experiment is the one built here."""
    hydra_config = HydraConfig.get()
    out_dir = Path(hydra_config.runtime.output_dir)
    # the overrides as typed: an interpolation in one (schedule.lr=${oc.env:X}) stays text here,
    # and resolving it is the config's business (below), with a clear line if it fails
    overrides = [str(o) for o in OmegaConf.to_container(hydra_config.overrides.task, resolve=False)]
    multirun = hydra_config.mode == RunMode.MULTIRUN
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:  # an interpolation that does not resolve
        unresolved = OmegaConf.to_container(cfg, resolve=False)
        key = getattr(err, "full_key", None)
        where = f"The value of {key!r}" if key else "The config"
        refusal = ConfigError(f"{where} does not resolve: {err}".splitlines()[0])
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
    except Exception as err:  # noqa: BLE001 - data on which numpy itself fails: this job's error record
        return _unexpected(err, "building the run", multirun, config, overrides, out_dir)
    verbose = experiment.progress if experiment.progress is not None else not multirun
    result = None
    if ran is not None:
        if same_run(ran[0], experiment):
            result = ran[1]
        else:
            log.warning("this job's config builds differently here than in the batched loop; running it alone")
    try:
        record = execute(experiment, out_dir, overrides, show_progress=verbose, result=result)
    except Interrupted as stop:
        if multirun:
            raise  # the sweep stops; main() summarizes what exists
        say(f"interrupted (Ctrl-C) at step {stop.results[0].steps}; {_kept(out_dir)} "
            f"(status interrupted, the iterate reached)")
        sys.exit(EXIT_INTERRUPTED)
    except RecordWriteError as err:
        if multirun:
            log.error("job not recorded: %s; %s", err, _kept(out_dir))
            return
        say(f"{err}; {_kept(out_dir)}")
        sys.exit(EXIT_BAD_INPUT)
    except Exception as err:  # noqa: BLE001
        return _unexpected(err, "running", multirun, config, overrides, out_dir)
    if verbose:
        log.info(run_summary(record, out_dir))


def _sweep_stopped(reason: str, code: int) -> int:
    """A multirun that stopped part-way: write the summary of the jobs that exist and say so
    in one line. Returns the exit code."""
    sweep_dir = summary.active_sweep
    if sweep_dir is None or not sweep_dir.is_dir():
        say(f"{reason}; no sweep directory was written")
        return code
    try:
        text = summary.summarize(sweep_dir, figures=False)
    except Exception as err:  # noqa: BLE001
        say(f"{reason}; the job records in {sweep_dir} are kept, but their summary could not be written "
            f"({first_line(err)}); rebuild it with: implicit-bias-summarize {sweep_dir}")
        return code
    print(f"\nSweep summary ({sweep_dir / summary.SUMMARY_MD}):\n{text}", flush=True)
    tally = text.splitlines()[0]
    say(f"{reason}; the sweep stopped: kept the records in {sweep_dir} ({tally}; jobs that had not started have "
        f"no row) and wrote their summary to {sweep_dir / summary.SUMMARY_MD}")
    return code


def main() -> None:
    """The ``implicit-bias`` command: Hydra's app, with faults reported in one line each."""
    global user_full_error
    previous = os.environ.get(FULL_ERROR)
    user_full_error = previous == "1"
    os.environ[FULL_ERROR] = "1"  # Hydra re-raises what escapes the run or sweep; reported below
    summary.active_sweep = None
    written.clear()
    try:
        _hydra_main()
    except KeyboardInterrupt:
        if summary.active_sweep is not None:
            sys.exit(_sweep_stopped("interrupted (Ctrl-C)", EXIT_INTERRUPTED))
        last = written[-1].parent if written else None
        say("interrupted (Ctrl-C); " + (_kept(last) if last is not None else "nothing was written"))
        sys.exit(EXIT_INTERRUPTED)
    except CompactHydraException as err:  # Hydra's own one-message errors, printed as Hydra prints them
        sys.stderr.write(str(err) + os.linesep)
        if isinstance(err.__cause__, OmegaConfBaseException):
            sys.stderr.write(str(err.__cause__) + os.linesep)
        sys.exit(EXIT_FAILED)
    except Exception as err:  # noqa: BLE001
        if summary.active_sweep is not None:  # a sweep that stopped part-way: summarize what exists first
            if type(err).__name__ == "TerminatedWorkerError":  # loky's, raised when a joblib worker dies
                reason = "a worker process of the joblib launcher was killed (TerminatedWorkerError)"
            else:
                reason = first_line(err).rstrip(".")
            code = _sweep_stopped(reason, EXIT_FAILED)
            if user_full_error:
                raise
            sys.exit(code)
        if user_full_error:
            raise
        if isinstance(err, RecordWriteError):  # a write outside execute (a study's records)
            say(str(err))
            sys.exit(EXIT_BAD_INPUT)
        say(f"unexpected {first_line(err)} (set {FULL_ERROR}=1 for the traceback)")
        sys.exit(EXIT_FAILED)
    finally:
        if previous is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = previous


# Hydra finds plugins by walking the hydra_plugins namespace package, which an editable
# install's import hook does not let it list; registering the class is Hydra's public way.
Plugins.instance().register(BatchedSweeper)

_hydra_main = hydra.main(version_base="1.3", config_path="pkg://implicit_bias.conf", config_name="config")(task)

if __name__ == "__main__":
    main()
