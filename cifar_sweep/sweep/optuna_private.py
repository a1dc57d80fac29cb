"""Optuna's private API, here and nowhere else (as Optuna's own integrations keep it), so an
Optuna release that changes it touches this one file.

Why we need it at all: a job reattaches to the trial the sweep asked for by its storage id
(Optuna's public API hands a trial only to the process that asked); other processes write to
trials they do not run (owner, failure reason, state: recovery, late results) and to queued
ones (a retry's earlier curve); heartbeats are beaten by hand from the training loop, not by
Optuna's thread, which would beat for a hung job forever; a point is checked against a
distribution before it is queued; the workers of a study are recorded on it, and stale trials
are found before they are failed with a reason (Optuna's own check fails them without one).
"""

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


def trial_id(trial: optuna.trial.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its number)."""
    return trial._trial_id


def storage(study: optuna.Study):
    """The study's storage (Optuna wraps an RDB storage in a cache: ask it, not its type)."""
    return study._storage


def reattach(study: optuna.Study, trial_id: int) -> optuna.trial.Trial:
    """The running trial `trial_id` of `study`, as a Trial this process can report to."""
    return optuna.trial.Trial(study, trial_id)


def frozen(study: optuna.Study, trial) -> FrozenTrial:
    """The stored state of `trial` (a Trial, FrozenTrial or storage id) as it is now."""
    return study._storage.get_trial(trial if isinstance(trial, int) else trial._trial_id)


def set_user_attr(study: optuna.Study, trial, key: str, value) -> None:
    """Set a user attribute of any trial, whoever runs it (a finished one raises)."""
    study._storage.set_trial_user_attr(_id(trial), key, value)


def set_system_attr(study: optuna.Study, trial, key: str, value) -> None:
    study._storage.set_trial_system_attr(_id(trial), key, value)


def set_state(study: optuna.Study, trial, state: TrialState) -> bool:
    """Move a trial to `state` atomically; False when another process did it first (a WAITING
    trial taken), and UpdateFinishedTrialError when it has finished."""
    return study._storage.set_trial_state_values(_id(trial), state=state)


def set_intermediate(study: optuna.Study, trial, step: int, value: float) -> None:
    study._storage.set_trial_intermediate_value(_id(trial), step, value)


def has_heartbeats(study: optuna.Study) -> bool:
    """Whether the storage keeps heartbeats (RDB storages do; journal files do not)."""
    return getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None


def beat(study: optuna.Study, trial) -> None:
    """Record one heartbeat of `trial` now."""
    study._storage.record_heartbeat(_id(trial))


def study_system_attrs(study: optuna.Study) -> dict:
    """The study's system attributes (Optuna 5 left them out of Study's public API)."""
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """RUNNING trials whose last heartbeat is older than the storage's grace period."""
    if not has_heartbeats(study):
        return []
    return study._storage._get_stale_trial_ids(study._study_id)


def contains(dist: BaseDistribution, value) -> bool:
    """Whether `value` lies in `dist` (its bounds, step or choices)."""
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def _id(trial) -> int:
    return trial if isinstance(trial, int) else trial._trial_id
