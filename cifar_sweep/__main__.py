"""python -m cifar_sweep [overrides] [-m]: one run, or a sweep with -m."""

import logging
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cifar_sweep.checks import check
from cifar_sweep.errors import UserError, exit_with

log = logging.getLogger("cifar_sweep")
CONF = Path(__file__).resolve().parents[1] / "conf"  # absolute: the console script works anywhere
# Hydra 1.4 instantiates configured callbacks and plugins without a whitelist; ours are trusted.
warnings.filterwarnings(
    "ignore",
    message=r"hydra\.utils\.instantiate\(\) resolved _target_='(cifar_sweep|hydra_plugins)\.",
)


@hydra.main(config_path=str(CONF), config_name="config")
def run(cfg: DictConfig) -> float | list[float]:
    hc = HydraConfig.get()
    try:
        check(cfg)  # before the slow imports: a bad value fails in a second
        # imported here so Lightning's loggers attach after Hydra has configured logging
        from cifar_sweep.train import objective, train

        callbacks = trial_callbacks(cfg, hc)
        single = hc.mode == RunMode.RUN  # a final run gets the evaluation report; trials do not
        if cfg.dataset.get("folds"):
            from cifar_sweep.crossval import cross_validate

            metrics = cross_validate(cfg, Path(hc.runtime.output_dir), callbacks)
        else:
            metrics = train(cfg, Path(hc.runtime.output_dir), callbacks, evaluate=single)
        for callback in callbacks:
            callback.raise_if_pruned()
        return objective(metrics, cfg.objective)
    except UserError as e:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed trial with this reason and goes on
        exit_with(e, log)


def trial_callbacks(cfg: DictConfig, hc) -> list:
    """In a sweep job: report the objective to the trial each epoch, for the pruner."""
    if "trial" not in cfg:  # a plain run
        return []
    from cifar_sweep.pruning import ReportToTrial
    from cifar_sweep.study import job_trial, objective_names

    if len(objective_names(cfg.objective)) > 1:  # Optuna prunes single-objective studies only
        return []
    return [ReportToTrial(job_trial(cfg, hc.sweeper), monitor=cfg.objective)]


def main() -> None:
    run()


if __name__ == "__main__":
    main()
