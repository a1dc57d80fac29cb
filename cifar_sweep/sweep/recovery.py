"""Trial ownership: who runs a trial, whether it is still alive, and one retry of a dead one.

A worker marks a trial it asks for at once: a first heartbeat, then one `owner` attribute (host,
boot id, PID and time namespaces, pid and the pid's start time in clock ticks since boot). Any
sweep process that finds a RUNNING trial whose owner it can see is gone fails it ("worker_died")
and queues its point again, so a rerun typed right after a crash goes on at once. It can see the
owner when both run on the same boot of the same kernel in the same namespaces; a hostname
alone is not enough (two containers may share one and not see each other's processes). Other
owners are judged by heartbeats, which the job itself beats while training makes progress
(`heartbeat.py`): Optuna's stale check fails them after `grace_s` and calls `Retry`. A trial
asked but never claimed (killed in between) is dead once it is older than `grace_s`.

Start ticks, not psutil's create_time: that one is derived from the boot time, which the kernel
adjusts with the clock, so a live owner could look like another process.
"""

import logging
import os
import socket
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep import slurm
from cifar_sweep.sweep.contract import (
    FAIL_KIND,
    FAIL_REASON,
    OWNER,
    RESUME,
    RETRIES,
    RETRY_OF,
    RUN_DIR,
    WORKER_DIED,
)

log = logging.getLogger(__name__)
# A start time in ticks is exact; the margin only absorbs a reader that rounds. A reused pid
# starts much later than this.
TICKS_TOLERANCE = 2


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:  # not Linux, or no /proc
        return None


def _namespace(kind: str) -> int | None:
    try:
        return os.stat(f"/proc/self/ns/{kind}").st_ino
    except OSError:  # not Linux, or a kernel without that namespace
        return None


BOOT = _read("/proc/sys/kernel/random/boot_id")
# Processes see each other's pids only within one PID namespace, and the same start ticks only
# within one time namespace (the kernel shifts them by its boot-time offset).
VIEW = {"pidns": _namespace("pid"), "timens": _namespace("time")}


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of process `pid` of this PID namespace, or None if none."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces and ')'
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)


def this_process(*, worker: int, device: str, trial: int) -> dict:
    """The owner record of this process for trial number `trial`."""
    pid = os.getpid()
    stat = _stat(pid)
    return {
        "host": socket.gethostname(),
        "boot": BOOT,
        **VIEW,
        "pid": pid,
        "ticks": stat[1] if stat else None,
        "worker": worker,
        "device": device,
        "trial": trial,
        **slurm.job(),
    }


def claim(study: optuna.Study, trial: optuna.trial.Trial, *, worker: int, device: str) -> None:
    """Mark `trial`, just asked, as this process's: a first heartbeat, then the owner (one write).
    A process killed before the owner is written leaves a trial that `orphans` finds by age."""
    if private.has_heartbeats(study):
        private.beat(study, trial)
    owner = this_process(worker=worker, device=device, trial=trial.number)
    private.set_user_attr(study, trial, OWNER, owner)


def take_over(trial: optuna.trial.Trial) -> None:
    """In a job: own the trial the sweep process claimed, when the job runs in another process
    (a submitit job on a node, a joblib worker), so the owner names the job's host, pid and
    SLURM job; a job in the sweep process itself changes nothing."""
    owner = private.frozen(trial.study, trial).user_attrs.get(OWNER) or {}
    mine = this_process(
        worker=owner.get("worker", 0), device=owner.get("device", "auto"), trial=trial.number
    )
    if (owner.get("host"), owner.get("pid")) != (mine["host"], mine["pid"]):
        private.set_user_attr(trial.study, trial, OWNER, mine)


def gone(owner: dict) -> bool:
    """Whether the process `owner` names has surely ended. When this process cannot see it
    (another machine, boot or PID namespace), SLURM answers for its jobs; heartbeats judge the
    rest."""
    seen = owner.get("boot") == BOOT and all(owner.get(k) == v for k, v in VIEW.items())
    if not seen or owner.get("ticks") is None:
        return bool(slurm.gone(owner))  # the scheduler's word where the owner was its job
    stat = _stat(owner["pid"])
    return stat is None or stat[0] in "ZXx" or abs(stat[1] - owner["ticks"]) > TICKS_TOLERANCE


def orphans(study: optuna.Study, *, grace_s: float) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials whose owner is gone, or that nobody claimed within `grace_s`."""
    too_old = datetime.now() - timedelta(seconds=grace_s)
    found = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER)
        if owner is None or owner.get("trial") != t.number:  # asked, never claimed
            if t.datetime_start is not None and t.datetime_start < too_old:
                found.append(t)
        elif gone(owner):
            found.append(t)
    return found


def requeue(study: optuna.Study, t: optuna.trial.FrozenTrial, *, max_retry: int | None) -> bool:
    """Queue the point of the failed trial `t` again; each retry counts against `max_retry`
    (None: an interruption, which costs no retry). The one retry counter of the sweep."""
    retries = t.user_attrs.get(RETRIES, 0) + (max_retry is not None)
    if max_retry is not None and retries > max_retry:
        log.warning("trial %d: its point was retried %d times; not again", t.number, max_retry)
        return False
    attrs = {RETRY_OF: t.number, RETRIES: retries}
    folder = t.user_attrs.get(RUN_DIR)  # the retry goes on from the last epoch it finished...
    if folder and (Path(folder) / "checkpoints" / "last.ckpt").exists():  # resume.LAST
        attrs[RESUME] = folder
    elif t.user_attrs.get(RESUME):  # ...or, stopped before its first epoch, from its own's
        attrs[RESUME] = t.user_attrs[RESUME]
    # The sampler's own records go with the point, as in Optuna's RetryFailedTrialCallback: a
    # GridSampler reads the `grid_id` of every trial it is told about.
    system_attrs = {**t.system_attrs, "fixed_params": t.params}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING, user_attrs=attrs, system_attrs=system_attrs
        )
    )
    return True


class Retry:
    """Optuna's stale-trial callback: queue the silent trial's point again, with the counter that
    `recover` uses. Not Optuna's RetryHeartbeatStaleTrialCallback: it would keep a second retry
    counter, and its retry would not go on from the failed trial's last checkpoint."""

    def __init__(self, max_retry: int):
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.warning("trial %d: no heartbeat within grace_s; failed", trial.number)
        requeue(study, trial, max_retry=self.max_retry)


def recover(study: optuna.Study, *, max_retry: int, grace_s: float) -> int:
    """Fail orphaned trials and queue their points again; return how many there were. Of several
    processes that find the same orphan, only the one whose update fails it queues it."""
    recovered = 0
    for t in orphans(study, grace_s=grace_s):
        claimed = t.user_attrs.get(OWNER, {}).get("trial") == t.number
        reason = "worker died" if claimed else "worker died before it claimed the trial"
        try:
            private.set_user_attr(study, t, FAIL_KIND, WORKER_DIED)
            private.set_user_attr(study, t, FAIL_REASON, reason)
            if not private.set_state(study, t, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another process failed it first, or it finished
            continue
        recovered += 1
        requeue(study, t, max_retry=max_retry)
    return recovered


def where(trials: list[optuna.trial.FrozenTrial]) -> str:
    """Where running trials run: 'trial 5 on host-a pid 123, trial 6 on ...'."""
    owners = [(t.number, t.user_attrs.get(OWNER) or {}) for t in trials]
    return ", ".join(
        f"trial {n} on {o.get('host', '?')} pid {o.get('pid', '?')}" for n, o in owners
    )
