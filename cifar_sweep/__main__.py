"""python -m cifar_sweep [overrides] [-m]: one run, or a sweep with -m."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cifar_sweep.errors import UserError

log = logging.getLogger("cifar_sweep")


@hydra.main(config_path="../conf", config_name="config")
def run(cfg: DictConfig) -> float:
    # imported here so Lightning's loggers attach after Hydra has configured logging
    from cifar_sweep.train import objective, train

    hc = HydraConfig.get()
    try:
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
