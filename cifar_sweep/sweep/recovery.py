"""Recovery: trials whose worker is gone are failed with a reason and their points queued again.

A RUNNING trial is an orphan when its owner is surely gone (ownership.py: at once, on this
machine or through SLURM), when it was asked but never claimed and every other registered worker
is gone (at once) or it is older than `grace_s`, or when nothing beat its heartbeat for `grace_s`
(a hung job, a host that went away). Any sweep process fails it, recording why, and queues its
point again; a retry goes on from the last epoch the failed trial finished. The queue is
idempotent: two processes that fail one orphan at the same moment (SQLite has no row locks) leave
one retry. Hand-written rather than Optuna's RetryHeartbeatStaleTrialCallback: that one keeps a
second retry counter, records no reason, and its retry starts from epoch 0.
"""

import logging
import os
import socket
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from cifar_sweep.resume import LAST, PREVIOUS
from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import (
    FAIL_KIND,
    FAIL_REASON,
    LINEAGE,
    NOT_RUN,
    OWNER,
    POINT,
    PREFIX,
    RESUME,
    RETRIES,
    RETRY_OF,
    RUN_DIR,
    WORKER_DIED,
    point_of,
)
from cifar_sweep.sweep.ownership import gone, other_workers

log = logging.getLogger(__name__)
# the hung worker that wakes up prints this as its trial's reason
SILENT = (
    f"hung, or its host unreachable; failed for silence by {socket.gethostname()} pid "
    f"{os.getpid()}, and a retry keeps the point"
)


def orphans(study: optuna.Study, *, grace_s: float) -> list[tuple[optuna.trial.FrozenTrial, str]]:
    """RUNNING trials no process will finish, each with the reason it is known dead."""
    too_old = datetime.now() - timedelta(seconds=grace_s)
    stale = set(private.stale_trial_ids(study))
    found = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER)
        if owner is None or owner.get("trial") != t.number:  # asked, never claimed
            old = t.datetime_start is not None and t.datetime_start < too_old
            if old or not any(not gone(w) for w in other_workers(study)):
                found.append((t, "worker died before it claimed the trial"))
        elif gone(owner):
            found.append((t, "worker died"))
        elif private.trial_id(t) in stale:
            found.append((t, f"no heartbeat for {grace_s:g} s (grace_s): {SILENT}"))
    return found


def recover(study: optuna.Study, *, max_retry: int, grace_s: float) -> int:
    """Fail orphaned trials with their reason and queue their points again; return how many.
    Of several processes that find the same orphan, only the one whose update fails it queues
    it (and the queue itself is idempotent, where the storage cannot tell them apart)."""
    recovered = 0
    for t, reason in orphans(study, grace_s=grace_s):
        try:
            private.set_user_attr(study, t, FAIL_KIND, WORKER_DIED)
            private.set_user_attr(study, t, FAIL_REASON, reason)
            if not private.set_state(study, t, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another process failed it first, or it finished
            continue
        log.warning("trial %d failed: %s", t.number, reason)
        recovered += 1
        requeue(study, t, max_retry=max_retry)
    return recovered


def requeue(study: optuna.Study, t: optuna.trial.FrozenTrial, *, max_retry: int | None) -> bool:
    """Queue the point of the failed trial `t` again, once; each retry counts against
    `max_retry` (None: an interruption, which costs no retry). The one retry counter of the
    sweep. False when the point is not queued (retried enough, or queued already)."""
    retries = t.user_attrs.get(RETRIES, 0) + (max_retry is not None)
    if max_retry is not None and retries > max_retry:
        log.warning("trial %d: its point was retried %d times; not again", t.number, max_retry)
        return False
    folder = t.user_attrs.get(RUN_DIR)  # the retry goes on from the last epoch it finished...
    if not (folder and any((Path(folder) / ckpt).exists() for ckpt in (LAST, PREVIOUS))):
        # ...or, stopped before its first epoch, from where it went on from itself (a best
        # checkpoint copied in from there is no epoch of its own: PBT, promotions)
        folder = t.user_attrs.get(RESUME)
    attrs = {RETRY_OF: t.number, RETRIES: retries, POINT: point_of(t)}
    attrs |= {k: t.user_attrs[k] for k in LINEAGE if k in t.user_attrs}  # a PBT interval's
    return queue_once(study, t, attrs, key=RETRY_OF, resume=folder)


def queue_once(study: optuna.Study, t, attrs: dict, *, key: str, resume: str | None) -> bool:
    """Queue `t`'s point again with `attrs` (`key` naming `t`: a retry's RETRY_OF, a
    promotion's PROMOTED_FROM), going on from the folder `resume`; once: False when another
    process queued it first, and of two queued at the same moment the later steps back."""
    if queued(study, key, t.number) is not None:
        return False
    # The sampler's own records go with the point, as in Optuna's RetryFailedTrialCallback (a
    # GridSampler reads the `grid_id` of every trial it is told about); ours stay behind: the
    # new trial's job has not started beating its heartbeat yet.
    system_attrs = {k: v for k, v in t.system_attrs.items() if not k.startswith(PREFIX)}
    given = system_attrs.get(private.FIXED, {})
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            user_attrs={**attrs, **({RESUME: resume} if resume else {})},
            # a trial stopped before it suggested its values: the point it was given
            system_attrs={**system_attrs, private.FIXED: {**given, **t.params}},
        )
    )
    _withdraw_duplicates(study, key, t.number)
    return True


def queued(study: optuna.Study, key: str, number: int) -> optuna.trial.FrozenTrial | None:
    """The first trial queued with `key` = `number` (a retry of trial `number`), if any."""
    found = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(key) == number]
    return min(found, key=lambda t: t.number) if found else None


def retry_of(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial | None:
    """The first trial queued to retry trial `number`, if any."""
    return queued(study, RETRY_OF, number)


def _withdraw_duplicates(study: optuna.Study, key: str, number: int) -> None:
    """Two processes that queued the same point at the same moment: the later one steps back
    (each process agrees which: the higher number), unless a worker has taken it already."""
    first = queued(study, key, number)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if t.user_attrs.get(key) == number and t.number != first.number and take(study, t):
            why = f"not run: trial {first.number} runs the same point"
            private.set_user_attr(study, t, FAIL_KIND, NOT_RUN)
            private.set_user_attr(study, t, FAIL_REASON, why)
            private.set_state(study, t, TrialState.FAIL)


def take(study: optuna.Study, trial) -> bool:
    """Take a queued trial as ask() would (WAITING -> RUNNING, atomic), so it never starts;
    False when it has started or ended already."""
    try:
        return private.set_state(study, trial, TrialState.RUNNING)
    except UpdateFinishedTrialError:
        return False
