"""Trials whose worker died: failed at once and queued again when the owner was on this host.

Each RUNNING trial records its owner (host, pid, the process's start time). A sweep process that
finds a RUNNING trial whose owner on this host no longer exists fails it ("worker died") and
queues its parameters again, so a rerun typed right after a crash goes on at once. Owners on
other hosts are left to heartbeats (`grace_s`), as before.
"""

import os
import socket

import optuna
import psutil
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from cifar_sweep.sweep.contract import FAIL_REASON

DIED = "worker died"
HOST = socket.gethostname()


def _started(pid: int) -> float:
    return round(psutil.Process(pid).create_time(), 2)


def claim(trial: optuna.trial.Trial, *, worker: int, device: str) -> None:
    """Record this process as the owner of `trial` (and, for reports, its worker and device)."""
    pid = os.getpid()
    attrs = {
        "worker": worker,
        "host": HOST,
        "pid": pid,
        "device": device,
        "pid_started": _started(pid),
        "claimed_for": trial.number,
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _owner_gone(attrs: dict) -> bool:
    try:
        process = psutil.Process(attrs["pid"])
        return (
            process.status() == psutil.STATUS_ZOMBIE
            or _started(process.pid) != attrs["pid_started"]
        )
    except psutil.NoSuchProcess:
        return True


def orphans(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials claimed by a process of this host that no longer exists. A retry copies
    its predecessor's attributes, so only attributes claimed for the trial itself count."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("claimed_for") == t.number
        and t.user_attrs.get("host") == HOST
        and _owner_gone(t.user_attrs)
    ]


def recover(study: optuna.Study, *, max_retry: int) -> int:
    """Fail this host's orphaned trials and queue their parameters again (at most `max_retry`
    times per point); return how many there were. Of several processes that find the same
    orphan, only the one whose update fails it queues it."""
    storage, recovered = study._storage, 0
    for t in orphans(study):
        try:
            storage.set_trial_user_attr(t._trial_id, FAIL_REASON, DIED)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another process failed it first
            continue
        recovered += 1
        retries = t.user_attrs.get("retries", 0) + 1
        if retries <= max_retry:
            attrs = {"retry_of": t.number, "retries": retries}
            study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)
    return recovered


def where(trials: list[optuna.trial.FrozenTrial]) -> str:
    """Where running trials run: 'trial 5 on host-a pid 123, trial 6 on ...'."""
    return ", ".join(
        f"trial {t.number} on {t.user_attrs.get('host', '?')} pid {t.user_attrs.get('pid', '?')}"
        for t in trials
    )
