"""The sweeper's config schema, registered as hydra/sweeper=cifar_optuna."""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class CifarOptunaSweeperConf:
    """The stock OptunaSweeperConf fields, plus pruner and stale-trial settings.

    Values live in conf/config.yaml and conf/{sweeper,pruner,search_space}/; this is the schema.
    """

    _target_: str = "hydra_plugins.cifar_sweep_optuna.sweeper.CifarOptunaSweeper"
    sampler: Any = None
    pruner: Any = None
    pbt: Any = None  # sweeper=pbt: population-based training (cifar_sweep.sweep.pbt)
    direction: Any = None
    storage: Any = None
    study_name: str | None = None
    n_trials: int = 1
    n_jobs: int = 1
    max_failure_rate: float = 0.0
    params: Any = None
    custom_search_space: str | None = None
    per_layer: Any = None  # read by cifar_sweep.sweep.spaces.per_layer
    heartbeat_s: int = 60
    grace_s: int = 180
    db_outage_s: float = 60
    max_retry: int = 1
    workers: int = 1
    devices: Any = "auto"
    worker: int | None = None  # this worker's index: set by a launching sweep (SLURM: the task id)
    enqueue: Any = None
    warm_start: str | None = None
    plots: bool = True


ConfigStore.instance().store(
    group="hydra/sweeper", name="cifar_optuna", node=CifarOptunaSweeperConf, provider="cifar_sweep"
)
