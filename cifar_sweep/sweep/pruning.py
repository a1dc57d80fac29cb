"""A Lightning callback that reports the objective to the job's Optuna trial, for pruning."""

import warnings

import lightning as L
import optuna

from cifar_sweep.sweep import optuna_private as private


class ReportToTrial(L.Callback):
    """Report the objective to the Optuna trial after every validation; stop when it is pruned.
    On several devices rank 0 alone holds the trial (None on the others): it reports, and its
    decision is broadcast, so every rank stops after the same epoch.

    Hand-written rather than optuna-integration's callback: that one raises inside fit, so a
    pruned run would leave no metrics.json; this one stops the Trainer and raises afterwards.
    """

    def __init__(self, trial: optuna.trial.Trial | None, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.pruned_epoch: int | None = None
        self._warned = False

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = self.trial is not None and self._report(trainer)
        if trainer.world_size > 1:  # a rank that stopped alone would leave the others waiting
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self.pruned_epoch = trainer.current_epoch
            trainer.should_stop = True

    def _report(self, trainer: L.Trainer) -> bool:
        """Report this epoch's objective; whether the pruner stops the trial here."""
        if self.monitor not in trainer.callback_metrics:
            if not self._warned:  # as optuna-integration does: the pruner sees nothing
                warnings.warn(
                    f"objective={self.monitor!r} is not logged after validation, so this trial "
                    f"cannot be pruned; logged: {sorted(trainer.callback_metrics)}",
                    stacklevel=1,
                )
                self._warned = True
            return False
        epoch = trainer.current_epoch
        if epoch in private.frozen(self.trial.study, self.trial).intermediate_values:
            return False  # a resumed trial: reported by the run it goes on from
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        return self.trial.should_prune()

    def raise_if_pruned(self) -> None:
        if self.pruned_epoch is not None:
            raise optuna.TrialPruned(f"pruned after epoch {self.pruned_epoch}")
