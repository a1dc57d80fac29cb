"""Trial ownership: which process runs a trial, and whether that process is still alive.

A worker marks a trial it asks for at once: a first heartbeat, then one `owner` attribute (host,
boot id, PID and time namespaces, pid and the pid's start time in clock ticks since boot). Each
sweep process also registers itself on the study while its loop runs, so a trial asked by a
process killed before it claimed the trial is known to be dead as soon as every registered
worker that could have asked it is gone. A process can see an owner when both run on the same
boot of the same kernel in the same namespaces; a hostname alone is not enough (two containers
may share one and not see each other's processes). SLURM answers for its jobs; heartbeats judge
the rest (recovery.py).

Start ticks, not psutil's create_time: that one is derived from the boot time, which the kernel
adjusts with the clock, so a live owner could look like another process.
"""

import os
import socket
from pathlib import Path

import optuna

from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep import slurm
from cifar_sweep.sweep.contract import OWNER, WORKER

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


def register(study: optuna.Study, *, worker: int, device: str) -> str:
    """Record this process on the study as one of its workers while its loop runs; the key to
    `unregister` with."""
    me = this_process(worker=worker, device=device, trial=None)
    key = f"{WORKER}{me['host']}:{me['boot']}:{me['pid']}"
    private.set_study_system_attr(study, key, me)
    return key


def unregister(study: optuna.Study, key: str) -> None:
    private.set_study_system_attr(study, key, None)


def other_workers(study: optuna.Study) -> list[dict]:
    """The workers registered on the study, this process aside."""
    me = (socket.gethostname(), BOOT, os.getpid())
    return [
        w
        for k, w in private.study_system_attrs(study).items()
        if k.startswith(WORKER) and w and (w.get("host"), w.get("boot"), w.get("pid")) != me
    ]


def where(trials: list[optuna.trial.FrozenTrial]) -> str:
    """Where running trials run: 'trial 5 on host-a pid 123, trial 6 on ...'."""
    owners = [(t.number, t.user_attrs.get(OWNER) or {}) for t in trials]
    return ", ".join(
        f"trial {n} on {o.get('host', '?')} pid {o.get('pid', '?')}" for n, o in owners
    )
