"""python -m cifar_sweep [overrides] [-m]: one run, or a sweep with -m."""

import logging
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cifar_sweep.checks import check
from cifar_sweep.errors import UserError

log = logging.getLogger("cifar_sweep")
# Hydra 1.4 instantiates configured callbacks and plugins without a whitelist; ours are trusted.
warnings.filterwarnings(
    "ignore",
    message=r"hydra\.utils\.instantiate\(\) resolved _target_='(cifar_sweep|hydra_plugins)\.",
)


@hydra.main(config_path="../conf", config_name="config")
def run(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    try:
        check(cfg)  # before the slow imports: a bad value fails in a second
        # imported here so Lightning's loggers attach after Hydra has configured logging
        from cifar_sweep.train import objective, train

        return objective(train(cfg, Path(hc.runtime.output_dir)), cfg.objective)
    except UserError as e:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed job and goes on
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    run()


if __name__ == "__main__":
    main()
