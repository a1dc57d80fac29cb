"""A trial's heartbeat, beaten by the job while training makes progress.

The sweep process beats for a job until the job's first training step has ended (a job waiting
in a queue, a cold cache, a long first compiled step are all covered); from then on the job
beats from its own training, validation, test and prediction steps, so a job that hangs (a
deadlock, a stuck data loader) stops beating and is failed and retried after `grace_s`
(recovery.py). A beat is a storage write at most every `heartbeat_s`; between beats a step costs
one clock read. Hand-written: Optuna's heartbeats come from a thread, which beats for a hung job
forever.
"""

import time

import lightning as L
import optuna

from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import JOB_BEATS


class Heartbeat(L.Callback):
    """Beat `trial`'s heartbeat at most every `every_s` seconds, from the training loop."""

    every_run = True  # every seed and fold of a trial beats, not only the first (repeats.py)

    def __init__(self, trial: optuna.trial.Trial, every_s: float):
        self.study, self.trial_id, self.every_s = trial.study, private.trial_id(trial), every_s
        self.next, self.beating = 0.0, False

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if not self.beating:  # from now on the sweep process stops beating for this trial
            private.set_system_attr(self.study, self.trial_id, JOB_BEATS, True)
            self.beating = True
        self._beat()

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, *args) -> None:
        self._beat()

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, *args) -> None:
        self._beat()

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, *args) -> None:
        self._beat()

    def _beat(self) -> None:
        now = time.monotonic()
        if now >= self.next:
            self.next = now + self.every_s
            private.beat(self.study, self.trial_id)


def callbacks(trial: optuna.trial.Trial | None, every_s: float) -> list[L.Callback]:
    """The job's heartbeat callback when it runs a trial of a storage with heartbeats."""
    if trial is None or not private.has_heartbeats(trial.study):  # a plain run, a journal file
        return []
    return [Heartbeat(trial, every_s)]
