"""A trial on several devices (trainer.devices=k > 1 in a sweep): its k ranks run as processes of
their own, which the worker starts and watches: the loop's `launch` for such trials.

Lightning's DDP starts ranks 1..k-1 by running the command line again, which under -m would start a
second sweep. So the worker starts every rank itself, each with the trial's own single-run command
(its point's overrides, its job folder, its trial; never the sweep's) and the environment torchrun
gives (TORCHELASTIC_RUN_ID, RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), which
Lightning takes as ranks started outside it, before SLURM's variables (with --ntasks=1 it would
otherwise count one rank, SLURM's). The ranks see the worker's devices (CUDA_VISIBLE_DEVICES,
pinned by workers.py) and share its CPU threads; each runs in a session of its own (the terminal's
Ctrl-C is the worker's to handle) and dies with the worker (trial_process.die_with_sweep). As their
parent, the worker sees a rank die the moment it does: it kills the others at once (SIGKILL: a rank
waiting in a collective reads no gentler signal) and the trial fails as worker_died, which the loop
queues to go on from its last epoch. Ctrl-C or SIGTERM in the worker stops them too (SIGTERM, then
SIGKILL). Rank 0 leaves the job's outcome in its folder (trial_process.py), told to the study like
an in-process job's return. Not torchrun's own agent: it restarts a failed group in place, or
waits, with no word to the study and no checkpoint to go on from.
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from cifar_sweep.errors import UserError
from cifar_sweep.sweep.contract import OUTCOME, SWEEP_PID, job_dir, quoted
from cifar_sweep.sweep.outcome import RankDied
from cifar_sweep.sweep.trial_process import job_return
from cifar_sweep.sweep.workers import OWN_KEYS

log = logging.getLogger(__name__)
POLL_S = 0.1  # between looks at the ranks: how soon a death is seen
ENDING_S = 10  # after rank 0 ended, or another rank failed: the others' time to end by themselves
STOP_S = 5  # after SIGTERM (Ctrl-C, scancel): the ranks' time to end before SIGKILL


class Ranks:
    """`launch(jobs, initial_job_idx)` for trials on `per_trial` devices: each job as its ranks,
    one job after another (sweep_checks refuses n_jobs > 1 for them)."""

    def __init__(self, *, config: DictConfig, per_trial: int):
        self.per_trial, self.sweep_dir = per_trial, config.hydra.sweep.dir
        # the sweep's own Hydra overrides (the storage, ...), less those of a sweep process
        self.hydra = [o for o in config.hydra.overrides.hydra if _key(o) not in OWN_KEYS]
        # `auto`, counted once by the sweep: never left for Lightning to expand in a trial
        counted = config.trainer.devices == per_trial
        self.devices = [] if counted else [f"trainer.devices={per_trial}"]

    def __call__(self, jobs: list, initial_job_idx: int) -> list[JobReturn]:
        numbers = range(initial_job_idx, initial_job_idx + len(jobs))  # contract.job_batches
        folders = [job_dir(self.sweep_dir, n) for n in numbers]
        return [self.run(job, folder=f) for job, f in zip(jobs, folders, strict=True)]

    def run(self, overrides: list[str], *, folder: Path) -> JobReturn:
        """One trial: its ranks started, watched until they end, and its outcome."""
        command = [sys.executable, "-m", "cifar_sweep", *self.hydra, *overrides, *self.devices]
        command.append(f"hydra.run.dir={quoted(str(folder))}")
        (folder / OUTCOME).unlink(missing_ok=True)
        procs: list[subprocess.Popen] = []
        try:
            start(procs, command, ranks=self.per_trial, run_id=f"trial-{folder.name}")
            return watch(procs, folder)
        except BaseException:  # Ctrl-C, SIGTERM: the loop records the trial as interrupted
            stop(procs, gently=True)
            raise


def start(procs: list[subprocess.Popen], command: list[str], *, ranks: int, run_id: str) -> None:
    """Start the ranks of `command` into `procs`, each in a session of its own."""
    threads = str(max(1, _threads() // ranks))  # the worker's share of the cores, split
    env = {
        **os.environ,
        "TORCHELASTIC_RUN_ID": run_id,
        "WORLD_SIZE": str(ranks),
        "LOCAL_WORLD_SIZE": str(ranks),
        "GROUP_RANK": "0",
        "NODE_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        SWEEP_PID: str(os.getpid()),
    }
    for r in range(ranks):
        # as Lightning names a rank's job log; rank 0 alone writes the job's .hydra/ folder
        own = [f"hydra.job.name=train_ddp_process_{r}", "hydra.output_subdir=null"] if r else []
        rank_env = {**env, "RANK": str(r), "LOCAL_RANK": str(r)}
        procs.append(subprocess.Popen([*command, *own], env=rank_env, start_new_session=True))


def watch(procs: list[subprocess.Popen], folder: Path) -> JobReturn:
    """Wait for the ranks. A rank killed by a signal fails the trial as worker_died at once;
    otherwise rank 0's outcome once every rank has ended (or a failed rank's exit, if it leaves
    none). Ranks still running ENDING_S after the first to end are killed, which is said."""
    first, deadline = None, None  # the first rank to end (with its code), and when to insist
    while True:
        codes = [p.poll() for p in procs]
        killed = [(r, -c) for r, c in enumerate(codes) if c is not None and c < 0]
        if killed:
            r, signum = killed[0]
            stop(procs)
            name = signal.Signals(signum).name if signum in signal.valid_signals() else signum
            died = RankDied(f"rank {r} of {len(procs)} was killed ({name})")
            return JobReturn(status=JobStatus.FAILED, _return_value=died)
        ended = [(r, c) for r, c in enumerate(codes) if c is not None]
        if first is None and ended and (codes[0] is not None or any(c for _, c in ended)):
            first = next((rc for rc in ended if rc[1]), ended[0])  # a failed rank, else rank 0
            deadline = time.monotonic() + ENDING_S
        if len(ended) == len(procs) or (deadline and time.monotonic() > deadline):
            late = [r for r, c in enumerate(codes) if c is None]
            if late:
                log.warning(
                    "%s: rank(s) %s still ran %d s after rank %d ended; killed",
                    folder, late, ENDING_S, first[0],
                )  # fmt: skip
            stop(procs)
            return job_return(folder) or _without_outcome(first, folder)
        time.sleep(POLL_S)


def _without_outcome(first: tuple[int, int] | None, folder: Path) -> JobReturn:
    """A job whose rank 0 left no outcome: an error, named by the first rank that ended."""
    r, code = first or (0, 0)
    log_file = folder / ("__main__.log" if r == 0 else f"train_ddp_process_{r}.log")
    error = UserError(f"rank {r} exited with code {code} before rank 0 said how; see {log_file}")
    return JobReturn(status=JobStatus.FAILED, _return_value=error)


def stop(procs: list[subprocess.Popen], *, gently: bool = False) -> None:
    """Stop every rank's process group: with `gently`, SIGTERM and up to STOP_S to end; then
    SIGKILL whatever is left."""
    if gently and any(p.poll() is None for p in procs):
        _signal(procs, signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(POLL_S)
    _signal(procs, signal.SIGKILL)
    for p in procs:
        p.wait()


def _signal(procs: list[subprocess.Popen], signum: int) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group has ended
            os.killpg(p.pid, signum)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _threads() -> int:
    """The CPU threads this worker was given (workers.py, SLURM), else every core it may use."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _free_port() -> int:
    """A port no process listens on now, for rank 0's rendezvous (as Lightning picks one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
