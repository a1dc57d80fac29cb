"""Hydra callbacks that turn start-up mistakes into one-line errors before any work starts."""

import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _unwritable(folder: Path) -> Path | None:
    """The first existing ancestor of `folder` if the folder cannot be created under it."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            ok = parent.is_dir() and os.access(parent, os.W_OK)
            return None if ok else parent
    return None


class CheckOutputDir(Callback):
    """Refuse an output folder that cannot be created, naming it (Hydra would show a traceback)."""

    def _check(self, key: str, folder: str) -> None:
        blocker = _unwritable(Path(folder).absolute())
        if blocker is not None:
            print(f"error: {key}={folder}: cannot create it ({blocker} is not a writable folder)",
                  file=sys.stderr)  # fmt: skip
            sys.exit(1)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)
