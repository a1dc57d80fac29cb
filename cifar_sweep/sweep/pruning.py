"""A Lightning callback that reports the objective to the job's Optuna trial, for pruning."""

import warnings

import lightning as L
import optuna

from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import RESUME, RETRY_OF, source


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
        self.undecided: int | None = None
        self._warned = False

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """A retry whose killed run reported its last epoch but died before it stopped on the
        pruner's decision asks the pruner now, when it goes on from that epoch's checkpoint
        (or when it trains that epoch again, in on_validation_end)."""
        if self.trial is not None:
            self.undecided = undecided(self.trial.study, self.trial)
        last = self.undecided
        ask = last is not None and trainer.current_epoch > last
        self._stop_if(trainer, ask and self._decide(), epoch=last)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = self.trial is not None and self._report(trainer)
        self._stop_if(trainer, prune, epoch=trainer.current_epoch)

    def _stop_if(self, trainer: L.Trainer, prune: bool, *, epoch: int | None) -> None:
        if trainer.world_size > 1:  # a rank that stopped alone would leave the others waiting
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self.pruned_epoch = epoch
            trainer.should_stop = True

    def _decide(self) -> bool:
        """The pruner's decision on the epoch the killed run reported last (Trial.should_prune
        reads the trial as this job opened it, without the values copied in since)."""
        self.undecided = None
        study = self.trial.study
        return study.pruner.prune(study, private.frozen(study, self.trial))

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
            # a resumed trial: reported by the run it goes on from, which may have died before
            # it acted on the pruner's decision
            return epoch == self.undecided and self._decide()
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        return self.trial.should_prune()

    def raise_if_pruned(self) -> None:
        if self.pruned_epoch is not None:
            raise optuna.TrialPruned(f"pruned after epoch {self.pruned_epoch}")


def undecided(study: optuna.Study, trial) -> int | None:
    """The last epoch a retry carries the value of, when the pruner's decision after it may have
    died with a killed run: that run reported it itself. None when there is none, or when it
    was reported by the run a promotion or PBT interval went on from, which acted on it."""
    t = private.frozen(study, trial)
    step = t.last_step
    if step is None or RETRY_OF not in t.user_attrs:
        return None
    trials = study.get_trials(deepcopy=False)  # a trial's number is its index here
    while t.user_attrs.get(RESUME):  # its values are those of the run it went on from
        earlier = source(t)
        if earlier is None or trials[earlier].last_step != step:
            break  # it reported `step` itself
        if RETRY_OF not in t.user_attrs:
            return None
        t = trials[earlier]
    return step
