"""A trial run as processes of its own, one per device (sweep/ranks.py starts them): their side.

Each rank dies with the sweep process that started it (Linux's parent-death signal), so a sweep
killed outright leaves no rank behind. Rank 0 alone reaches the study (heartbeat, reports; the
worker stays the trial's owner) and leaves the job's outcome in its folder: complete with its
value(s), pruned, or failed with the error's first line and whether no swept value changes it,
which is what an in-process job returns to the sweep. The sweep reads it back here as that
JobReturn.
"""

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from cifar_sweep.errors import SharedCauseError, UserError
from cifar_sweep.sweep.contract import COMPLETE, OUTCOME, PRUNED, SWEEP_PID

PR_SET_PDEATHSIG = 1  # prctl(2)
FAILED = "failed"


def rank() -> int:
    """This process's rank among the trial's (torchrun's RANK); 0 in any other run."""
    return int(os.environ.get("RANK", "0"))


def started_by_its_worker() -> bool:
    """Whether this process is a rank its worker started (ranks.py). The worker stays the trial's
    owner (cs:owner): it tells the study how the trial ended after every rank has exited, and the
    ranks die with it; a rank 0 owning it would look dead to the other workers in between."""
    return SWEEP_PID in os.environ


def die_with_sweep() -> None:
    """SIGKILL this rank when the sweep process that started it ends; exit at once if it has
    ended already (its pid is no longer this process's parent). Nothing outside a trial's ranks."""
    parent = os.environ.get(SWEEP_PID)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the sweep died before the line above
        sys.exit(1)


def reported(run: Callable[[], object], folder: Path):
    """`run()`, the job of one rank; rank 0 leaves its outcome in `folder` (OUTCOME). A pruned
    trial is a normal end on every rank; an error is raised again after it is written."""
    import optuna

    die_with_sweep()
    first = rank() == 0
    try:
        value = run()
    except optuna.TrialPruned as e:
        if first:
            _write(folder, {"state": PRUNED, "reason": str(e)})
        return None
    except Exception as e:
        if first:
            reason = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            shared = isinstance(e, SharedCauseError)
            _write(folder, {"state": FAILED, "reason": reason, "shared": shared})
        raise
    if first:
        _write(folder, {"state": COMPLETE, "values": value})
    return value


def _write(folder: Path, outcome: dict) -> None:
    partial = folder / f"{OUTCOME}.partial"  # whole or not at all: the sweep may read it any time
    partial.write_text(json.dumps(outcome))
    os.replace(partial, folder / OUTCOME)


def job_return(folder: Path):
    """The outcome rank 0 left in `folder` as the JobReturn an in-process job gives; None when
    it left none."""
    import optuna
    from hydra.core.utils import JobReturn, JobStatus

    try:
        outcome = json.loads((folder / OUTCOME).read_text())
    except (OSError, ValueError):
        return None
    if outcome["state"] == COMPLETE:
        return JobReturn(status=JobStatus.COMPLETED, _return_value=outcome["values"])
    if outcome["state"] == PRUNED:
        return JobReturn(
            status=JobStatus.FAILED, _return_value=optuna.TrialPruned(outcome["reason"])
        )
    error = SharedCauseError if outcome["shared"] else UserError
    return JobReturn(status=JobStatus.FAILED, _return_value=error(outcome["reason"]))
