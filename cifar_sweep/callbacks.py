"""Hydra callbacks that turn start-up mistakes into one-line errors before any work starts."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cifar_sweep.checks import unwritable


class CheckOutputDir(Callback):
    """Refuse an output folder that cannot be created, naming it (Hydra would show a traceback)."""

    def _check(self, key: str, folder: str) -> None:
        blocker = unwritable(Path(folder).absolute())
        if blocker is not None:
            message = f"{key}={folder}: cannot create it ({blocker} is not a writable folder)"
            print(f"error: {message}", file=sys.stderr)
            sys.exit(1)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)
