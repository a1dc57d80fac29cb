"""Hydra's entry to the cifar_sweep sweeper; the sweep itself is imported only when one runs.

Hydra imports every module of `hydra_plugins` at start-up, so this one stays light, as Hydra's
own Optuna plugin does: a plain run pays nothing for Optuna, SQLAlchemy or matplotlib.
"""

from hydra.plugins.sweeper import Sweeper

# registers hydra/sweeper=cifar_optuna
from hydra_plugins.cifar_sweep_optuna import config as _schema  # noqa: F401


class CifarOptunaSweeper(Sweeper):
    """Checks the sweep's values, then builds it (`cifar_sweep.sweep.sweeper`); the fields are
    those of `config.CifarOptunaSweeperConf`."""

    def __init__(self, **fields):
        self.fields = fields

    def setup(self, *, hydra_context, task_function, config) -> None:
        from cifar_sweep.sweep.sweep_checks import check_sweep
        from cifar_sweep.sweep.workers import started_by_a_sweep

        if started_by_a_sweep():  # its launching process checked the same config; the trials'
            import lightning.pytorch  # noqa: F401  imports before the first, not in it (Ctrl-C)
        else:
            check_sweep(config)  # a bad value is answered before the study's heavy imports
        from cifar_sweep.sweep.sweeper import CifarOptunaSweeperImpl

        self.sweeper = CifarOptunaSweeperImpl(**self.fields)
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
