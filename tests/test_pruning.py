"""The job's side of pruning: reporting the objective to its trial."""

import warnings
from types import SimpleNamespace

import optuna
import pytest

from cifar_sweep.sweep.pruning import ReportToTrial


def test_a_missing_objective_warns_once_and_reports_nothing():
    study = optuna.create_study()
    trial = study.ask()
    callback = ReportToTrial(trial, monitor="val/acc_best")
    trainer = SimpleNamespace(
        sanity_checking=False, world_size=1, current_epoch=0, callback_metrics={"val/acc": 0.5}
    )
    with pytest.warns(UserWarning, match=r"val/acc_best.*logged: \['val/acc'\]"):
        callback.on_validation_end(trainer, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once is enough
        callback.on_validation_end(trainer, None)
    assert study.trials[0].intermediate_values == {}


def test_the_objective_is_reported_each_epoch_and_a_pruned_trial_stops_the_trainer():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=0.3))
    callback = ReportToTrial(study.ask(), monitor="val/acc_best")
    trainer = SimpleNamespace(
        sanity_checking=False,
        world_size=1,
        current_epoch=0,
        should_stop=False,
        callback_metrics={"val/acc_best": 0.5},
    )
    callback.on_validation_end(trainer, None)
    assert not trainer.should_stop
    trainer.current_epoch, trainer.callback_metrics["val/acc_best"] = 1, 0.2
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop and study.trials[0].intermediate_values == {0: 0.5, 1: 0.2}
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        callback.raise_if_pruned()
