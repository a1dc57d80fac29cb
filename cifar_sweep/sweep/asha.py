"""ASHA (Li et al. 2020, "A system for massively parallel hyperparameter tuning"), stopping or
promoting: `pruner=asha`.

Rungs lie at min_epochs * reduction_factor^k epochs (below max_epochs). A trial that reaches a
rung goes on only if it is in the top 1/reduction_factor of the results at that rung so far
(the first results always are, as in Optuna's SuccessiveHalvingPruner). Otherwise, with
`promote: false`, it stops, as successive halving does; with `promote: true` it pauses there:
it ends PRUNED with `cs:paused` and keeps its checkpoint, and whenever a worker is free, the
best paused trial of the highest rung that has earned it (the top rung_size // reduction_factor
of that rung) goes on from its checkpoint to the next rung, queued like a retry (the same point,
a pointer to its folder, its earlier values re-reported). Then `n_trials` counts configurations,
not trials: a point's segments share `cs:point`.

Hand-written: Optuna's pruners and Ray's ASHA only stop a trial (ray #32634 asks for pausing),
and Syne Tune's promotion type is not an Optuna pruner; we keep every trial's last checkpoint and
can resume a point from its epoch, so we can pause.
"""

import logging

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from cifar_sweep.errors import UserError
from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import (
    LIVE,
    PAUSED,
    POINT,
    PROMOTED_FROM,
    RUN_DIR,
    classify,
    point_of,
)
from cifar_sweep.sweep.recovery import queue_once

log = logging.getLogger(__name__)


class ASHAPruner(BasePruner):
    """Asynchronous successive halving over epochs; with `promote`, paused trials go on later."""

    def __init__(self, *, min_epochs: int, reduction_factor: int, max_epochs: int, promote: bool):
        lows = {"min_epochs": (min_epochs, 1), "reduction_factor": (reduction_factor, 2)}
        for key, (value, low) in lows.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"pruner.{key}={value} must be an integer >= {low}")
        self.min_epochs, self.eta, self.promote = min_epochs, reduction_factor, promote
        self.rungs = []  # epochs trained at each rung, 1-based
        epochs = min_epochs
        while epochs < max_epochs:
            self.rungs.append(epochs)
            epochs *= reduction_factor

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step + 1 not in self.rungs:
            return False
        value = trial.intermediate_values[step]
        if _in_top(value, rung_values(study, step), self.eta, study.direction, strict=False):
            return False
        if self.promote:  # still RUNNING: its job writes nothing after this
            private.set_user_attr(study, trial, PAUSED, step + 1)
        return True

    def promotion(self, study: optuna.Study) -> FrozenTrial | None:
        """The paused trial to go on now, if one has earned it: of the highest rung first, the
        best there; None when none has."""
        trials = study.get_trials(deepcopy=False)
        promoted = {t.user_attrs[PROMOTED_FROM] for t in trials if PROMOTED_FROM in t.user_attrs}
        for epochs in sorted(self.rungs, reverse=True):
            step = epochs - 1
            values = rung_values(study, step)
            paused = [
                t
                for t in trials
                if t.user_attrs.get(PAUSED) == epochs
                and t.state == TrialState.PRUNED
                and t.number not in promoted
                and _in_top(t.intermediate_values[step], values, self.eta, study.direction)
            ]
            if paused:
                sign = 1 if study.direction == StudyDirection.MAXIMIZE else -1
                return max(paused, key=lambda t: sign * t.intermediate_values[step])
        return None


def rung_values(study: optuna.Study, step: int) -> list[float]:
    """The value each point reported at `step` (a point's segments report it once between them)."""
    by_point = {
        point_of(t): t.intermediate_values[step]
        for t in study.get_trials(deepcopy=False)
        if step in t.intermediate_values
    }
    return list(by_point.values())


def _in_top(value: float, values: list[float], eta: int, direction, *, strict: bool = True) -> bool:
    """Whether `value` is among the best len(values) // eta of `values`. Not `strict`: with fewer
    than eta values, the best one is (a rung's first results go on, as in Optuna's pruner)."""
    k = len(values) // eta
    if k == 0:
        if strict:
            return False
        k = 1
    maximize = direction == StudyDirection.MAXIMIZE
    kth = sorted(values, reverse=maximize)[k - 1]
    return value >= kth if maximize else value <= kth


def queue(study: optuna.Study, paused: FrozenTrial, folder: str) -> bool:
    """Queue the point of `paused` to go on from its checkpoint, once (another worker may have
    queued it the same moment: the later one steps back, as recovery's retries do)."""
    attrs = {PROMOTED_FROM: paused.number, POINT: point_of(paused)}
    queued = queue_once(study, paused, attrs, key=PROMOTED_FROM, resume=folder)
    if queued:
        log.info(
            "trial %d's point goes on from epoch %d: in the top 1/%d of its rung",
            paused.number,
            paused.user_attrs[PAUSED],
            study.pruner.eta,
        )
    return queued


def to_ask(study: optuna.Study, *, n_jobs: int, n_trials: int) -> int:
    """With promotions (pruner.promote): the trials the worker loop asks for now. A paused
    trial that has earned it goes on first (queued, so ask() takes it); else new points until
    the study holds n_trials configurations, its points' segments counted once."""
    paused = study.pruner.promotion(study)
    if paused is not None and queue(study, paused, paused.user_attrs[RUN_DIR]):
        return 1
    if any(PROMOTED_FROM in t.user_attrs for t in study.get_trials(states=(TrialState.WAITING,))):
        return 1  # queued by another worker a moment ago
    return min(n_jobs, n_trials - points(study, LIVE))


def points(study: optuna.Study, classes) -> int:
    """How many configurations the study's trials of `classes` hold (segments counted once)."""
    return len({point_of(t) for t in study.get_trials(deepcopy=False) if classify(t) in classes})
