"""Warm starts: known-good points queued first, and an earlier study's finished trials copied in.

`hydra.sweeper.enqueue` lists parameter mappings that run before anything is sampled (each
skipped when the study already holds it). `hydra.sweeper.warm_start` names an earlier study
(`name`, or `name@storage-url`) whose finished trials that fit this search space are added as
finished trials (Optuna's add_trial): the sampler starts informed and nothing is retrained.
"""

import logging
from collections.abc import Callable

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from cifar_sweep.errors import UserError
from cifar_sweep.sweep import contract
from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import classify
from cifar_sweep.sweep.storage import masked, sweeper_storage

log = logging.getLogger(__name__)


def distributions(space: dict, extend: Callable | None, config) -> dict[str, BaseDistribution]:
    """Every parameter the sweep can suggest: the space's, plus those a define-by-run space
    (hydra.sweeper.custom_search_space) suggests over a few random draws."""
    found = dict(space)
    if extend is not None:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
        try:
            scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        finally:
            optuna.logging.set_verbosity(verbosity)
        for _ in range(32):
            trial = scratch.ask()
            extend(config, trial)
            found.update(private.frozen(scratch, trial).distributions)
            scratch.tell(trial, 0.0)
    return found


def _misfit(params: dict, dists: dict[str, BaseDistribution]) -> str | None:
    """Why `params` does not fit the space, or None."""
    for name, value in params.items():
        if name not in dists:
            return f"{name} is not in the search space {sorted(dists)}"
        if not private.contains(dists[name], value):
            return f"{name}={value!r} is outside the search space ({dists[name]})"
    return None


def enqueue(
    study: optuna.Study,
    points,
    dists: dict[str, BaseDistribution],
    n_trials: int | None = None,
) -> None:
    """Queue each point of `hydra.sweeper.enqueue` unless the study already holds it; say so
    when the study already holds its `n_trials` finished trials (the point would wait)."""
    for i, point in enumerate(points or []):
        if not isinstance(point, dict):
            raise UserError(
                f"hydra.sweeper.enqueue[{i}]={point!r} must be a mapping, e.g. "
                "[{optimizer.lr: 0.01}]"
            )
        why = _misfit(point, dists)
        if why:
            raise UserError(f"hydra.sweeper.enqueue[{i}]: {why}")
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        study.enqueue_trial(dict(point), skip_if_exists=True)
        queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) > waiting
        finished = sum(classify(t) in contract.FINISHED for t in study.get_trials(deepcopy=False))
        if queued and n_trials is not None and finished >= n_trials:
            log.warning(
                "hydra.sweeper.enqueue[%d]=%s waits: the study already holds its n_trials=%d "
                "finished trials; raise hydra.sweeper.n_trials to run it",
                i,
                dict(point),
                n_trials,
            )


def _source(spec: str, study: optuna.Study, sweeper) -> optuna.Study:
    """The study `spec` names: in this study's storage, or in the one after the @."""
    name, _, url = spec.partition("@")
    # the same storage object when it is the same storage: a second sqlite connection in this
    # process would hold a lock that the sweep's own writes then wait for
    storage = sweeper_storage(sweeper, url=url) if url else private.storage(study)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        where = masked(url or sweeper.storage)
        raise UserError(
            f"hydra.sweeper.warm_start={spec}: no study {name!r} in {where}; studies there: {names}"
        )
    return optuna.load_study(study_name=name, storage=storage)


def copy_finished(study: optuna.Study, spec: str | None, sweeper, dists) -> None:
    """Copy the finished trials of the study `spec` names that fit this space, once."""
    if not spec:
        return
    source = _source(spec, study, sweeper)

    def goal(s: optuna.Study) -> str:
        names = contract.objective_names(s.user_attrs.get(contract.OBJECTIVE, []))
        return f"{names} {[d.name.lower() for d in s.directions]}"

    if goal(source) != goal(study):
        raise UserError(
            f"hydra.sweeper.warm_start={spec}: it optimizes {goal(source)}, "
            f"this study {goal(study)}"
        )
    if any(
        t.user_attrs.get(contract.WARM_START, "").startswith(f"{source.study_name}#")
        for t in study.get_trials(deepcopy=False)
    ):
        return  # a rerun: already copied
    finished = source.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    fits = [t for t in finished if _misfit(t.params, dists) is None]
    for t in fits:
        study.add_trial(
            optuna.trial.create_trial(
                state=t.state,
                values=t.values,
                params=t.params,
                distributions={k: dists[k] for k in t.params},
                intermediate_values=t.intermediate_values,
                user_attrs={contract.WARM_START: f"{source.study_name}#{t.number}"},
            )
        )
    log.info(
        "warm start: %d of %d finished trials of %s fit this space and were copied",
        len(fits),
        len(finished),
        source.study_name,
    )
