"""Which PBT intervals run next, each queued once (the worker loop asks for them).

As Ray's PBT chooses the trial to run, the member furthest behind goes first (one not started yet
counts as epoch 0), so with fewer workers than members the population moves on together; of
members at one epoch the best goes first, so the worst ends its interval last and ranks itself
against the most members at its epoch (pbt.py). A member's first interval is queued
with no values (the study's sampler draws them, at random: conf/sweeper/pbt.yaml); each later one
goes on from the checkpoint its last interval chose at its end (PBT_NEXT, pbt.PBTPruner.decide),
with the chosen values as fixed params. Queued trials are taken by any worker's ask().

Once: two workers that queue the same member's same generation at the same moment leave one (the
later number steps back, as recovery's retries do; asked for before it could, it is not run:
runs_it_already), and a trial a worker asked for when another took the interval queued a moment
before is not run (loop.drop_surplus).
"""

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import (
    CHARGED,
    FAIL_KIND,
    FAIL_REASON,
    NOT_RUN,
    PBT_GENERATION,
    PBT_MEMBER,
    PBT_NEXT,
    PBT_PARENT,
    RESUME,
    RETRIES,
    RETRY_OF,
    RUN_DIR,
    WORKER_DIED,
    classify,
)
from cifar_sweep.sweep.pbt import last_value, members, start_epoch
from cifar_sweep.sweep.recovery import take

STRAY = "not run: another worker took the PBT interval queued for it"


def to_ask(study: optuna.Study, *, n_jobs: int, max_retry: int) -> int:
    """Queue the next intervals, up to `n_jobs` waiting; how many trials to ask for now (0: no
    member is ready, each is running or done)."""
    waiting = len(_waiting(study))
    trials = study.get_trials(deepcopy=False)
    found = ready(trials, study.pruner.population, study.direction, max_retry=max_retry)
    for _, member, ended in found[: max(n_jobs - waiting, 0)]:
        queue(study, trials, member, ended)
    return min(n_jobs, len(_waiting(study)))


def ready(trials: list[FrozenTrial], population: int, direction, *, max_retry: int) -> list[tuple]:
    """(epoch it starts at, member, its last ended interval or None) of each member whose next
    interval can be queued: the furthest behind first, then the best, then a failed one. A
    member whose interval failed for good (for its values, or its worker died more than
    `max_retry` times: no retry comes) is rescued (pbt.PBTPruner.rescue)."""
    lineup = members(trials)
    found = []
    for member in range(population):
        its = lineup.get(member)
        if not its:
            found.append((0, member, None))
            continue
        latest = max(its, key=lambda t: (t.user_attrs[PBT_GENERATION], t.number))
        if latest.state == TrialState.PRUNED and PBT_NEXT in latest.user_attrs:
            found.append((latest.last_step + 1, member, latest))
        elif _failed_for_good(latest, max_retry):
            found.append((start_epoch(latest, trials), member, latest))
    sign = -1 if direction == StudyDirection.MAXIMIZE else 1

    def order(r: tuple) -> tuple:
        start, member, ended = r
        if ended is None or ended.state != TrialState.PRUNED:  # not started yet, or failed
            return start, ended is not None, 0.0, member
        return start, False, sign * last_value(ended), member

    return sorted(found, key=order)


def _failed_for_good(trial: FrozenTrial, max_retry: int) -> bool:
    """Failed, and no retry will be queued for it (recovery.requeue's rule)."""
    kind = classify(trial)
    return kind in CHARGED or (
        kind == WORKER_DIED and trial.user_attrs.get(RETRIES, 0) + 1 > max_retry
    )


def queue(study: optuna.Study, trials: list, member: int, ended: FrozenTrial | None) -> bool:
    """Queue `member`'s next interval (after `ended`; None: its first), once; False when
    another worker queued it first. After a failed interval, the pruner's rescue decides."""
    attrs = {PBT_MEMBER: member, PBT_GENERATION: 0}
    params = {}
    failed = ended is not None and ended.state == TrialState.FAIL
    if failed and _same_slot(study, (member, ended.user_attrs[PBT_GENERATION] + 1)):
        return False  # rescued by another worker already
    decided = study.pruner.rescue(study, ended) if failed else None
    if failed and not decided:  # its first interval failed: a fresh draw, from epoch 0
        attrs[PBT_GENERATION] = ended.user_attrs[PBT_GENERATION] + 1
    elif ended is not None:
        decided = decided or ended.user_attrs[PBT_NEXT]
        parent = trials[decided["parent"]]  # a study's trial numbers are its list's indexes
        params = decided["params"]
        attrs = {
            PBT_MEMBER: member,
            PBT_GENERATION: ended.user_attrs[PBT_GENERATION] + 1,
            PBT_PARENT: parent.number,
            RESUME: parent.user_attrs[RUN_DIR],
        }
    slot = (member, attrs[PBT_GENERATION])
    if _same_slot(study, slot):
        return False
    study.enqueue_trial(params, user_attrs=attrs)
    _withdraw_duplicates(study, slot)
    return True


def _slot(t: FrozenTrial) -> tuple | None:
    """(member, generation) of a PBT interval; None for any other trial."""
    if PBT_MEMBER not in t.user_attrs:
        return None
    return t.user_attrs[PBT_MEMBER], t.user_attrs[PBT_GENERATION]


def _same_slot(study: optuna.Study, slot: tuple) -> list[FrozenTrial]:
    """The first tries (no retries) of `slot` that were not withdrawn, in order."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if _slot(t) == slot and RETRY_OF not in t.user_attrs and classify(t) != NOT_RUN
    ]


def runs_it_already(study: optuna.Study, trial: FrozenTrial) -> int | None:
    """The trial that holds `trial`'s (member, generation) already when two workers queued it
    and both asked for it before the later one stepped back; None when `trial` holds it."""
    slot = _slot(trial)
    if slot is None or RETRY_OF in trial.user_attrs:
        return None
    first = _same_slot(study, slot)
    return first[0].number if first and first[0].number != trial.number else None


def _withdraw_duplicates(study: optuna.Study, slot: tuple) -> None:
    """Of two intervals queued for one slot at the same moment, the later steps back (unless a
    worker has taken it already)."""
    first, *later = _same_slot(study, slot)
    for t in later:
        if t.state == TrialState.WAITING and take(study, t):
            private.set_user_attr(study, t, FAIL_KIND, NOT_RUN)
            private.set_user_attr(study, t, FAIL_REASON, f"not run: trial {first.number} runs it")
            private.set_state(study, t, TrialState.FAIL)


def _waiting(study: optuna.Study) -> list[FrozenTrial]:
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return [t for t in waiting if PBT_MEMBER in t.user_attrs]
