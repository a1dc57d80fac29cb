"""The job's side of pruning: reporting the objective to its trial, and a retry of a run killed
after it reported an epoch asking the pruner about that epoch."""

import warnings
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from conftest import study, sweep, sweep_killed_once
from optuna.trial import TrialState, create_trial

from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import PROMOTED_FROM, RESUME, RETRY_OF
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


def trainer_at(epoch: int, value: float) -> SimpleNamespace:
    """A Trainer as the callback sees it, gone on from a checkpoint at the start of `epoch`."""
    return SimpleNamespace(
        sanity_checking=False,
        world_size=1,
        current_epoch=epoch,
        should_stop=False,
        callback_metrics={"val/acc_best": value},
    )


def retry_of(s: optuna.Study, attrs: dict, values: dict) -> optuna.trial.Trial:
    """The running retry of trial `attrs[RETRY_OF]` (a FAIL), with its values, as loop._prepare
    copies them."""
    s.enqueue_trial({}, user_attrs={**attrs, RESUME: "folder"})
    retry = s.ask()
    for step, value in values.items():
        private.set_intermediate(s, retry, step, value)
    return retry


@pytest.mark.parametrize("resumed_at", [1, 2])  # from epoch 0's checkpoint, or from epoch 1's
def test_a_retry_asks_the_pruner_about_the_last_epoch_its_killed_run_reported(resumed_at):
    """The killed run reported 0.2 after epoch 1 (below the threshold) and died before the
    sweep heard it was pruned: its retry stops after epoch 1, without training on."""
    s = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=0.3), direction="maximize")
    values = {0: 0.5, 1: 0.2}
    s.add_trial(create_trial(state=TrialState.FAIL, intermediate_values=values))
    callback = ReportToTrial(retry_of(s, {RETRY_OF: 0}, values), monitor="val/acc_best")
    trainer = trainer_at(resumed_at, 0.2)
    callback.on_train_start(trainer, None)
    if resumed_at == 1:  # trains epoch 1 again: asked after it, as its first run was
        assert not trainer.should_stop
        callback.on_validation_end(trainer, None)
    assert trainer.should_stop
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        callback.raise_if_pruned()
    assert s.trials[1].intermediate_values == values


def test_a_retry_of_a_promotion_killed_before_its_first_epoch_is_not_paused_again():
    """A promotion goes on from a paused trial's epoch 1; killed before it reported an epoch of
    its own, its retry carries epoch 1's value, whose decision (paused, then promoted) was taken:
    it trains on."""
    s = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=0.3), direction="maximize")
    values = {0: 0.5, 1: 0.2}
    s.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values=values))
    s.add_trial(
        create_trial(
            state=TrialState.FAIL,
            intermediate_values=values,
            user_attrs={PROMOTED_FROM: 0, RESUME: "folder"},
        )
    )
    callback = ReportToTrial(retry_of(s, {RETRY_OF: 1}, values), monitor="val/acc_best")
    trainer = trainer_at(2, 0.4)
    callback.on_train_start(trainer, None)
    callback.on_validation_end(trainer, None)
    assert not trainer.should_stop and s.trials[2].intermediate_values == {**values, 2: 0.4}


@pytest.mark.slow  # two sweeps of 3 epochs: about 40 s on 2 cores
@pytest.mark.parametrize(
    ("hook", "epoch"),
    [("on_validation_end", "1"), ("on_fit_end", "any")],
    ids=["before-its-checkpoint", "after-its-checkpoint"],
)
def test_a_trial_killed_once_its_pruner_decided_is_retried_and_pruned_at_that_epoch(
    tmp_path: Path, hook: str, epoch: str
):
    """lr 1e-5 stays near chance and is pruned after epoch 1 of 3; the sweep is killed (SIGKILL)
    after its trial reported epoch 1, before the study was told: before epoch 1's checkpoint was
    written, or after. The rerun a user types retries it, which stops after epoch 1 too."""
    args = [
        "sweeper=grid",
        "optimizer.lr=choice(1e-5)",
        "trainer.max_epochs=3",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=0.6",
        "+hydra.sweeper.pruner.n_warmup_steps=1",
    ]
    sweep_killed_once(tmp_path, *args, hook=hook, epoch=epoch)
    sweep(tmp_path, *args)
    first, retry = study(tmp_path).trials
    assert first.state == TrialState.FAIL and sorted(first.intermediate_values) == [0, 1]
    assert retry.user_attrs[RETRY_OF] == 0 and retry.state == TrialState.PRUNED
    assert sorted(retry.intermediate_values) == [0, 1]  # epoch 2 was not trained
