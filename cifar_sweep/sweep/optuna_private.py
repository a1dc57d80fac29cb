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

import copy

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import FrozenTrial, TrialState

FIXED = "fixed_params"  # Optuna's system attribute on a queued trial: the values it suggests


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


def fix_params(study: optuna.Study, trial: optuna.trial.Trial, params: dict) -> None:
    """Make a trial just asked suggest `params`, as an enqueued one does: Optuna reads them from
    its FIXED system attribute, which the Trial cached when it was asked."""
    study._storage.set_trial_system_attr(trial._trial_id, FIXED, params)
    trial._fixed_params = dict(params)
    trial._cached_frozen_trial.system_attrs[FIXED] = dict(params)


def with_random_state(sampler: optuna.samplers.BaseSampler, source) -> optuna.samplers.BaseSampler:
    """A copy of `sampler` whose random generators (its own and its inner samplers') are those of
    `source`, the same kind of sampler after draws in another study; nothing else of it is taken
    (a sampler keeps the study it first served, and refuses another)."""
    fresh = copy.deepcopy(sampler)

    def graft(into, frm) -> None:
        for name, value in vars(into).items():
            if isinstance(value, LazyRandomState):
                setattr(into, name, copy.deepcopy(getattr(frm, name)))
            elif isinstance(value, optuna.samplers.BaseSampler):
                graft(value, getattr(frm, name))

    graft(fresh, source)
    return fresh


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
