"""``hydra/sweeper=batched``: the basic sweeper's jobs, run in as few vectorized loops as possible.

    implicit-bias -m hydra/sweeper=batched optimizer=adam optimizer.eps=1e-12,1e-8 schedule.lr=0.001,0.01

The job list is exactly the basic sweeper's (the cartesian product of the swept values, in
the same order, numbered the same way). Every job's config is composed first; the jobs
whose configs build are grouped by :func:`implicit_bias.batch.groups` (same dataset, same
optimizer and non-numeric options, same run settings) and each group runs as one loop (or a
few, if its trajectories would exceed :data:`implicit_bias.batch.LOOP_MEMORY`). As each loop
ends, its jobs go through Hydra's ``run_job`` like plain multirun jobs — their own
directories, ``.hydra/`` files, log files and ``result.json``/``trajectory.npz``/figure —
with the run already done. Jobs whose config does not build, or whose group's loop raised, run through the
same task function as in a plain multirun and get the same ``invalid_config``/``error``
records (a job whose task raises all the same gets the ``error`` record the task writes for
an unexpected error). The multirun callbacks (``summary.csv``) run as usual.

Ctrl-C stops the sweep without losing what was done: the jobs of the loop that was running
are recorded (members that had stopped with their results, the others with status
``interrupted`` at the iterate they reached), jobs of earlier loops keep their records, every
job that had not run gets its directory and ``.hydra/config.yaml``, ``overrides.yaml`` but no
record (a ``missing`` row), the summary of all of them is written, one line says what was kept, and the command
exits with 130.

Everything runs in this process: a launcher chosen with ``hydra/launcher=…`` is not used.
Each distinct dataset is held once for the whole sweep.

A job is built twice: here, for the batch, and again by the task when it records. The task
uses the batch's run only if both builds are the same experiment (same data, optimizer,
schedule, settings); otherwise — a relative data path under ``hydra.job.chdir=true``, say —
it runs the job itself, as a plain multirun would.
"""


import copy
import functools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import JobReturn, JobStatus, _save_config, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)


def _is_value_override(override: Override, is_group: Callable[[str], bool]) -> bool:
    """``key=value`` for an existing key that is not a config group (nor a Hydra setting)."""
    return (override.type == OverrideType.CHANGE and override.package is None and not override.is_sweep_override()
            and not override.is_hydra_override() and not is_group(override.key_or_group))


@dataclass
class BatchedSweeperConf:
    _target_: str = "hydra_plugins.implicit_bias_batched.batched_sweeper.BatchedSweeper"
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="batched", node=BatchedSweeperConf, provider="implicit-bias")


class BatchedSweeper(Sweeper):
    def __init__(self, params: Optional[Dict[str, str]] = None) -> None:
        super().__init__()
        self.params = params or {}
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def sweep(self, arguments: List[str]) -> Any:
        from implicit_bias.batch import DataPool, LoopInterrupted, run_loops

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        try:
            configs = self._job_configs(jobs)
            pool = DataPool()  # each distinct dataset held once, also while the jobs are built
            experiments = [pool.share(self._experiment(config)) for config in configs]
        except KeyboardInterrupt:
            _say(f"interrupted (Ctrl-C) while the {len(jobs)} jobs were being prepared; no job had run, "
                 f"so {sweep_dir} holds no records")
            raise SystemExit(EXIT_INTERRUPTED) from None
        returns: List[Optional[JobReturn]] = [None] * len(jobs)
        pending: List[Tuple[int, Any]] = []  # the jobs of the loop being recorded, with their runs
        try:
            for members, results in run_loops(experiments):  # each loop's jobs are recorded as it ends
                pending = [(index, None if result is None else (experiments[index], result))
                           for index, result in zip(members, results or [None] * len(members))]
                while pending:
                    index, ran = pending[0]
                    returns[index] = self._record(index, jobs[index], configs[index], ran)
                    pending.pop(0)
            for index, job in enumerate(jobs):  # jobs that were not in a loop (their config does not build)
                if returns[index] is None:
                    returns[index] = self._record(index, job, configs[index], None)
        except KeyboardInterrupt as stop:
            if isinstance(stop, LoopInterrupted):  # every member of the loop: finished, or interrupted where it was
                pending = [(index, (experiments[index], result)) for index, result in zip(stop.members, stop.results)]
            self._stopped(sweep_dir, jobs, configs, [(index, ran) for index, ran in pending if ran is not None])
        return [returns]

    def _stopped(self, sweep_dir: Path, jobs: Sequence[Sequence[str]], configs: Sequence[DictConfig],
                 runs: Sequence[Tuple[int, Any]]) -> None:
        """After Ctrl-C: record the runs in hand (the interrupted loop's members, or the rest of
        a loop being recorded), give every job not yet recorded its directory with Hydra's
        ``.hydra/`` config and overrides and no record (a ``missing`` row), write the summary of what exists,
        say in one line what was kept, and exit with 130."""
        from implicit_bias.summary import SUMMARY_MD, summarize

        log.info("interrupted (Ctrl-C): recording the %d runs of the loop in hand", len(runs))
        try:
            for index, ran in runs:
                self._record(index, jobs[index], configs[index], ran)
        except KeyboardInterrupt:  # a second Ctrl-C: stop recording; what was written stays
            pass
        for config in configs:
            self._placeholder(config)
        try:
            text = summarize(sweep_dir, figures=False)  # figures can take long; implicit-bias-summarize draws them
        except Exception as err:  # noqa: BLE001 - the records are kept whatever the summary does
            _say(f"interrupted (Ctrl-C); the records in {sweep_dir} are kept, but their summary could not be "
                 f"written ({_first_line(err)}); rebuild it with: implicit-bias-summarize {sweep_dir}")
            raise SystemExit(EXIT_INTERRUPTED) from None
        print(f"\nSweep summary ({sweep_dir / SUMMARY_MD}):\n{text}", flush=True)
        _say(f"interrupted (Ctrl-C); the batched sweep stopped: kept the records in {sweep_dir} "
             f"({text.splitlines()[0]}; the jobs that had not run are the missing rows) and wrote their summary "
             f"to {sweep_dir / SUMMARY_MD}")
        raise SystemExit(EXIT_INTERRUPTED)

    def _placeholder(self, config: DictConfig) -> None:
        """The job's directory with the ``.hydra/config.yaml`` and ``overrides.yaml`` that
        ``run_job`` would write (what the summary reads for a ``missing`` row), unless the
        directory exists already. Hydra's own ``hydra.yaml`` is left out: it costs four times
        the other two (a copy and a dump of Hydra's whole config), for a job that never ran."""
        previous = HydraConfig.instance().cfg
        try:
            HydraConfig.instance().set_config(config)  # for ${hydra.job.num} in the subdir
            out_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
                OmegaConf.select(config, "hydra.sweep.subdir"))
            if out_dir.exists():
                return
            out_dir.mkdir(parents=True)
            if config.hydra.output_subdir is not None:
                hydra_output = out_dir / str(config.hydra.output_subdir)
                _save_config(OmegaConf.masked_copy(config, [key for key in config if key != "hydra"]), "config.yaml",
                             hydra_output)
                _save_config(config.hydra.overrides.task, "overrides.yaml", hydra_output)
        except Exception as err:  # noqa: BLE001 - a job without a directory is simply not in the summary
            log.warning("no directory written for a job that had not run (%s)", _first_line(err))
        finally:
            HydraConfig.instance().cfg = previous

    def _record(self, index: int, job: Sequence[str], config: DictConfig, ran: Any) -> JobReturn:
        """The job through Hydra's ``run_job``, as a plain multirun job, with its run done.

        If the task raises (it records what it can itself), the job gets the ``error`` record
        the task writes for an unexpected error, ``TypeName: message``, unless it wrote one."""
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        log.info(f"\t#{index} : {' '.join(filter_overrides(job))}")
        returned = run_job(
            hydra_context=self.hydra_context,
            task_function=functools.partial(self.task_function, ran=ran),
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if returned.status == JobStatus.FAILED:
            try:
                returned.return_value  # raises the task's exception
            except Exception as err:  # noqa: BLE001
                _record_error(returned, err)
        return returned

    def _job_configs(self, jobs: Sequence[Sequence[str]]) -> List[DictConfig]:
        """Each job's composed config, as ``load_sweep_config`` gives it.

        Composing costs ~0.1 s a job. Jobs whose overrides differ only in the values of
        plain ``key=value`` overrides (not config groups, not ``+``/``~``/``hydra.``) share
        the composition of the first of them; the others copy it and apply their values with
        the function Hydra's own composition applies them with, then get their own
        ``hydra.overrides.task``, ``override_dirname`` and job number — the fields Hydra
        derives from the overrides. (A test compares the result with full composition.)
        """
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        parser = OverridesParser.create(config_loader=loader)
        is_group = functools.lru_cache(maxsize=None)(lambda key: bool(loader.get_group_options(key)))
        templates: Dict[tuple, DictConfig] = {}
        configs = []
        for index, job in enumerate(jobs):
            parsed = parser.parse_overrides(list(job))
            values = [o for o in parsed if _is_value_override(o, is_group)]
            structure = (tuple(o.input_line for o in parsed if o not in values), tuple(o.key_or_group for o in values))
            template = templates.get(structure)
            if template is None:
                config = templates[structure] = loader.load_sweep_config(self.config, list(job))
            else:
                config = copy.deepcopy(template)
                ConfigLoaderImpl._apply_overrides_to_config(values, config)
                naming = config.hydra.job.config.override_dirname
                task_overrides = [o for o in parsed if not o.is_hydra_override()]  # as Hydra splits them
                with read_write(config.hydra), open_dict(config.hydra):
                    config.hydra.overrides.task = [o.input_line for o in task_overrides]
                    config.hydra.job.override_dirname = get_overrides_dirname(
                        overrides=task_overrides, kv_sep=naming.kv_sep, item_sep=naming.item_sep,
                        exclude_keys=naming.exclude_keys)
                OmegaConf.copy_cache(from_config=self.config, to_config=config)
            with open_dict(config):
                config.hydra.job.id = index
                config.hydra.job.num = index
            configs.append(config)
        return configs

    @staticmethod
    def _experiment(config: DictConfig) -> Any:
        """The job's built experiment, or None if it does not build (its job then records why)."""
        from implicit_bias.build import build
        from implicit_bias.params import ConfigError

        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(config)  # as run_job does, for ${hydra:...} interpolations
        try:  # the task's part of the config (all but hydra), resolved as the job will resolve it
            task_config = {key: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
                           for key in config if key != "hydra" for node in [config[key]]}
            return build(task_config)
        except (ConfigError, OmegaConfBaseException):
            return None  # the job itself will record why
        except Exception as err:  # noqa: BLE001 - anything else too: the job runs alone and records it
            log.warning("building job #%s failed (%s); it will run alone and record that", config.hydra.job.num,
                        _first_line(err))
            log.debug("the build's error", exc_info=True)
            return None
        finally:
            if previous is not None:
                HydraConfig.instance().cfg = previous


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C


def _first_line(err: BaseException) -> str:
    """``TypeName: first line of the message``."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _say(message: str) -> None:
    """One line on stderr, as the command prints its errors."""
    print(f"implicit-bias: error: {message}", file=sys.stderr, flush=True)


def _record_error(returned: JobReturn, err: BaseException) -> None:
    """The ``error`` record of a job whose task raised, written as the task writes it for an
    unexpected error in a multirun (same fields, ``TypeName: message``), unless the job has a
    record already."""
    from implicit_bias.results import RESULT_FILE, failure_record, write_json

    out_dir = Path(str(returned.hydra_cfg.hydra.runtime.output_dir))
    if (out_dir / RESULT_FILE).exists():
        return
    try:
        config = OmegaConf.to_container(returned.cfg, resolve=True)
    except OmegaConfBaseException:
        config = OmegaConf.to_container(returned.cfg, resolve=False)
    overrides = [str(o) for o in (returned.overrides or [])]
    log.error("job failed: %s (recorded as status error)", _first_line(err))
    try:
        write_json(out_dir / RESULT_FILE, failure_record(config, overrides, "error", f"{type(err).__name__}: {err}"))
    except Exception as failure:  # noqa: BLE001 - then the summary shows the job as missing
        log.error("job not recorded: %s", _first_line(failure))
