"""``hydra/sweeper=batched``: the basic sweeper's jobs, run in as few vectorized loops as possible.

    implicit-bias -m hydra/sweeper=batched optimizer=adam optimizer.eps=1e-12,1e-8 schedule.lr=0.001,0.01

The job list is exactly the basic sweeper's (the cartesian product of the swept values, in
the same order, numbered the same way). Every job's config is composed first; the jobs
whose configs build are grouped by :func:`implicit_bias.batch.groups` (same dataset, same
optimizer and non-numeric options, same run settings) and each group runs as one loop. Then
every job goes through Hydra's ``run_job`` like a plain multirun job — its own directory,
``.hydra/`` files, log file and ``result.json``/``trajectory.npz``/figure — with the run
already done. Jobs whose config does not build, or whose group's loop raised, run through the
same task function as in a plain multirun and get the same ``invalid_config``/``error``
records. The multirun callbacks (``summary.csv``) run as usual.

Everything runs in this process: a launcher chosen with ``hydra/launcher=…`` is not used.
"""


import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)


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
        from implicit_bias.batch import run_all

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        setup_globals()
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        configs = [self._job_config(index, job) for index, job in enumerate(jobs)]
        results = run_all([self._experiment(config) for config in configs])

        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        log.info(f"Recording {len(jobs)} jobs")
        returns: List[JobReturn] = []
        for index, (job, config, result) in enumerate(zip(jobs, configs, results)):
            log.info(f"\t#{index} : {' '.join(filter_overrides(job))}")
            returns.append(run_job(
                hydra_context=self.hydra_context,
                task_function=functools.partial(self.task_function, result=result),
                config=config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            ))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns]

    def _job_config(self, index: int, overrides: Sequence[str]) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = index
            config.hydra.job.num = index
        return config

    @staticmethod
    def _experiment(config: DictConfig) -> Any:
        """The job's built experiment, or None if it does not build (its job then records why)."""
        from implicit_bias.build import build
        from implicit_bias.params import ConfigError

        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(config)  # as run_job does, for ${hydra:...} interpolations
        try:
            task_config = copy.deepcopy(config)
            with read_write(task_config), open_dict(task_config):
                del task_config["hydra"]
            return build(OmegaConf.to_container(task_config, resolve=True))
        except (ConfigError, OmegaConfBaseException):
            return None
        finally:
            if previous is not None:
                HydraConfig.instance().cfg = previous
