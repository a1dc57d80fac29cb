"""`python tests/kill_once.py HOOK EPOCH MARKER OVERRIDE...`: `python -m cifar_sweep OVERRIDE...`
whose training process kills itself (SIGKILL, as a crash: nothing is told) at the Lightning
callback hook HOOK of epoch EPOCH ('any': the first call), once: it writes MARKER first, and a
run that finds MARKER trains on."""

import os
import runpy
import signal
import sys
from pathlib import Path

import lightning as L


class KillOnce(L.Callback):
    def __init__(self, hook: str, epoch: int | None, marker: Path):
        self.epoch, self.marker = epoch, marker
        setattr(self, hook, self._kill)

    def _kill(self, trainer: L.Trainer, *args) -> None:
        if self.marker.exists() or self.epoch not in (None, trainer.current_epoch):
            return
        self.marker.write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    hook, epoch, marker, *overrides = sys.argv[1:]
    import cifar_sweep.train

    built = cifar_sweep.train.build_callbacks
    kill = KillOnce(hook, None if epoch == "any" else int(epoch), Path(marker))
    cifar_sweep.train.build_callbacks = lambda node: [*built(node), kill]
    sys.argv = ["cifar_sweep", *overrides]
    runpy.run_module("cifar_sweep", run_name="__main__", alter_sys=True)
