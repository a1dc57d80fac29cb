"""ASHA that pauses and promotes (pruner=asha_promote) against ASHA that stops (pruner=asha): on
curves that cross, promotion finds the best point where stopping loses it, for a third of the
epochs of no pruning; a real sweep's promoted trial goes on from its checkpoint."""

from pathlib import Path

import optuna
import pytest
from conftest import (
    PROMOTION_LRS,
    kill_once_a_trial_runs_with,
    promotion_sweep,
    study,
    sweep,
)
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from cifar_sweep.report import trials_table
from cifar_sweep.sweep import optuna_private
from cifar_sweep.sweep.asha import ASHAPruner
from cifar_sweep.sweep.contract import (
    PAUSED,
    PROMOTED_FROM,
    RETRY_OF,
    RUN_DIR,
    WORKER_DIED,
    classify,
    point_of,
)
from cifar_sweep.sweep.loop import WorkerLoop

EPOCHS = 9  # rungs at 1 and 3 epochs with reduction_factor 3
# each point's objective after 1, 3 and 9 epochs, straight lines between: point 0 starts slowly
# and ends best; it is second at the first rung when it gets there, behind point 1
CURVES = {
    1: (0.70, 0.75, 0.80),
    0: (0.50, 0.80, 0.95),
    **{
        p: (0.45 - 0.05 * (p - 2), 0.46 - 0.05 * (p - 2), 0.47 - 0.05 * (p - 2))
        for p in range(2, 9)
    },
}
ORDER = [1, 0, 2, 3, 4, 5, 6, 7, 8]  # the order the sampler proposes them
LRS = PROMOTION_LRS  # a real sweep's points, in this order


def value(point: int, epoch: int) -> float:
    """The objective after `epoch` + 1 epochs (0-based, as trials report)."""
    e1, e3, e9 = CURVES[point]
    done = epoch + 1
    if done <= 3:
        return e1 + (e3 - e1) * (done - 1) / 2
    return e3 + (e9 - e3) * (done - 3) / 6


class InOrder(optuna.samplers.BaseSampler):
    """Proposes ORDER's points one after another (a retry or promotion keeps its own)."""

    def __init__(self):
        self.left = list(ORDER)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, name, distribution):
        return self.left.pop(0)


def stand_in_jobs(s: optuna.Study, trained: list):
    """A launcher whose jobs train by the curves: from the epoch after the last one reported
    (a promotion's earlier values are copied to it, as a checkpoint would bring it back),
    reporting each epoch and stopping where the pruner says."""

    def launch(jobs, initial_job_idx):
        returns = []
        for job in jobs:
            trial_id = int(next(o for o in job if o.startswith("+trial.id=")).split("=")[1])
            trial = optuna_private.reattach(s, trial_id)
            frozen = optuna_private.frozen(s, trial_id)
            point = frozen.params["p"]
            start = 0 if frozen.last_step is None else frozen.last_step + 1
            ret = JobReturn(status=JobStatus.COMPLETED, _return_value=value(point, EPOCHS - 1))
            for epoch in range(start, EPOCHS):
                trained.append((point, epoch))
                trial.report(value(point, epoch), epoch)
                if trial.should_prune():
                    pruned = optuna.TrialPruned(f"pruned after epoch {epoch}")
                    ret = JobReturn(status=JobStatus.FAILED, _return_value=pruned)
                    break
            returns.append(ret)
        return returns

    return launch


def run(promote: bool, tmp_path: Path) -> tuple[optuna.Study, list]:
    pruner = ASHAPruner(min_epochs=1, reduction_factor=3, max_epochs=EPOCHS, promote=promote)
    s = optuna.create_study(direction="maximize", sampler=InOrder(), pruner=pruner)
    trained = []
    WorkerLoop(
        study=s,
        n_trials=len(ORDER),
        n_jobs=1,
        grid=False,
        failure_budget=0,
        launch=stand_in_jobs(s, trained),
        overrides=lambda trials: [[f"p={t.suggest_int('p', 0, 8)}"] for t in trials],
        names=["val/acc_best"],
        heartbeat_s=60,
        grace_s=180,
        max_retry=1,
        sweep_dir=str(tmp_path),
    ).run()
    return s, trained


def test_on_crossing_curves_promotion_finds_the_best_point_that_stopping_loses(tmp_path):
    stopped, stopped_epochs = run(False, tmp_path / "stop")
    promoted, promoted_epochs = run(True, tmp_path / "promote")
    assert stopped.best_value == pytest.approx(0.80)  # point 0 was stopped at its first rung
    assert promoted.best_value == pytest.approx(0.95)  # paused there, then promoted
    assert promoted.best_trial.params == {"p": 0}
    # every point was tried, each counted once though promoted points ran in two segments
    assert len({point_of(t) for t in promoted.trials}) == len(ORDER)
    segments = [t for t in promoted.trials if PROMOTED_FROM in t.user_attrs]
    assert sorted(t.params["p"] for t in segments) == [0, 2]
    for t in segments:  # each went on from the epoch after its rung: nothing trained twice
        source = promoted.trials[t.user_attrs[PROMOTED_FROM]]
        assert source.state == TrialState.PRUNED and PAUSED in source.user_attrs
    assert len(promoted_epochs) == len(set(promoted_epochs)) == 27
    assert len(stopped_epochs) == 17 and EPOCHS * len(ORDER) == 81  # no pruning: 81 for 0.95
    assert not promoted.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    table = trials_table(promoted)  # trials.csv: a point's segments as one line of work
    best = table[table["point"] == point_of(promoted.best_trial)]
    assert list(best["segment"]) == [0, 1] and list(best["state"]) == ["PRUNED", "COMPLETE"]


@pytest.mark.slow  # a real sweep of 6 tiny trials with promotions: about 20 s; CI runs it
def test_a_real_sweeps_promoted_trial_goes_on_from_its_checkpoint(tmp_path: Path):
    """Six fixed points on the tiny set (paused at a rung, then in the top half of it once the
    others have reported): each promoted trial goes on from its checkpoint."""
    lrs = LRS
    args = promotion_sweep(max_epochs=4)
    sweep(tmp_path, *args)
    s = study(tmp_path)
    configs = {point_of(t) for t in s.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}
    assert len(configs) == len(lrs)
    promotions = [t for t in s.trials if PROMOTED_FROM in t.user_attrs]
    assert promotions, "no paused trial earned its place (the tiny set's curves changed?)"
    for t in promotions:  # each went on from the epoch its trial was paused at
        paused = s.trials[t.user_attrs[PROMOTED_FROM]]
        [log] = [p.read_text() for p in Path(t.user_attrs[RUN_DIR]).glob("*.log")]
        epochs = paused.user_attrs[PAUSED]
        assert f"going on from epoch {epochs}, where the pruner paused it" in log
        assert t.params == paused.params and t.last_step >= epochs  # and trained on
    assert not s.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.slow  # a real sweep killed while a promoted trial trains, then rerun: CI runs it
def test_a_sweep_killed_during_a_promotion_goes_on_where_it_stopped(tmp_path: Path):
    args = promotion_sweep(max_epochs=8)
    kill_once_a_trial_runs_with(tmp_path, args, PROMOTED_FROM, "promotion")
    sweep(tmp_path, *args)  # the same command, typed again
    s = study(tmp_path)
    configs = {point_of(t) for t in s.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}
    assert len(configs) == len(LRS)  # no configuration lost, none added
    killed = [t for t in s.trials if classify(t) == WORKER_DIED]
    assert len(killed) == 1 and PROMOTED_FROM in killed[0].user_attrs
    [retry] = [t for t in s.trials if t.user_attrs.get(RETRY_OF) == killed[0].number]
    assert point_of(retry) == point_of(killed[0]) and retry.state != TrialState.WAITING
    assert not s.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
