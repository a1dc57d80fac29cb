"""A Lightning callback that reports the objective to the job's Optuna trial, for pruning."""

import warnings

import lightning as L
import optuna

from cifar_sweep.sweep import optuna_private as private


class ReportToTrial(L.Callback):
    """Report the objective to the Optuna trial after every validation; stop when it is pruned.

    Hand-written rather than optuna-integration's callback: that one raises inside fit, so a
    pruned run would leave no metrics.json; this one stops the Trainer and raises afterwards.
    """

    def __init__(self, trial: optuna.trial.Trial, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.pruned_epoch: int | None = None
        self._warned = False

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            if not self._warned:  # as optuna-integration does: the pruner sees nothing
                warnings.warn(
                    f"objective={self.monitor!r} is not logged after validation, so this trial "
                    f"cannot be pruned; logged: {sorted(trainer.callback_metrics)}",
                    stacklevel=1,
                )
                self._warned = True
            return
        epoch = trainer.current_epoch
        if epoch in private.frozen(self.trial.study, self.trial).intermediate_values:
            return  # a resumed trial: reported by the run it goes on from
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            trainer.should_stop = True

    def raise_if_pruned(self) -> None:
        if self.pruned_epoch is not None:
            raise optuna.TrialPruned(f"pruned after epoch {self.pruned_epoch}")
