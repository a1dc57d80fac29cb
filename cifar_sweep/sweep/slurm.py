"""What a sweep process takes from SLURM when it runs as a job: an array task is a worker (its
index the task id), it uses the CPUs it was given, its trials record the job, and a trial whose
job the scheduler no longer runs is recovered at once, from any node that can ask the scheduler.

Read from SLURM's own environment variables and `scontrol`; nothing here when not under SLURM.
Not Lightning's SLURMEnvironment(auto_requeue): it requeues the one job that was signalled, so its
trial would wait for that job's turn in the queue; here any worker of the study goes on with the
point from its last checkpoint at once.
"""

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path


def array_task() -> int | None:
    """This process's array task id, or None outside an array job."""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return int(task) if task and task.isdigit() else None


def job() -> dict:
    """The job this process runs in, for the owner record: {} outside SLURM. A requeued job keeps
    its id and counts a restart, so the pair names one run of it."""
    if "SLURM_JOB_ID" not in os.environ:
        return {}
    task = array_task()  # an array task is addressed as <array job>_<task>
    name = os.environ["SLURM_JOB_ID"]
    if task is not None:
        name = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{task}"
    return {
        "slurm_job": name,
        "slurm_restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
    }


def use_given_cpus() -> int | None:
    """Use as many CPU threads as SLURM gave the task (`--cpus-per-task`), unless the user chose
    a number; called before torch is imported. Returns the number set, or None."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if not cpus or "OMP_NUM_THREADS" in os.environ:
        return None
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = cpus
    return int(cpus)


def gone(owner: dict) -> bool | None:
    """Whether the SLURM job run that `owner` names has ended: True or False as the scheduler
    says; None when the owner ran outside SLURM or no scheduler answers here."""
    job_id = owner.get("slurm_job")
    if not job_id or shutil.which("scontrol") is None:
        return None
    try:
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", str(job_id)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:  # "Invalid job id": ended long enough ago to be forgotten
        return "Invalid job id" in out.stderr or None
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    if fields.get("JobState") not in ("RUNNING", "COMPLETING", "SUSPENDED"):
        return True  # cancelled, timed out, pre-empted and waiting to be requeued, finished
    return int(fields.get("Restarts", 0)) != owner.get("slurm_restarts", 0)


def launch_cancelling(launcher):
    """`launcher.launch`, which for Hydra's submitit launchers cancels the jobs it submitted when
    the sweep stops (Ctrl-C, SIGTERM, an error): no job outlives its sweep. Others: as they are.
    The jobs are found where submitit keeps them: one folder per job id under the launcher's
    `submitit_folder` (`.../.submitit/%j`), so nothing of submitit's is patched."""
    if not type(launcher).__module__.startswith("hydra_plugins.hydra_submitit_launcher"):
        return launcher.launch
    jobs_folder = Path(str(launcher.params.get("submitit_folder", "")).split("%j")[0])

    def launch(job_overrides, initial_job_idx):
        _quiet_sacct()
        before = _job_ids(jobs_folder)
        try:
            return launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        except BaseException:
            submitted = sorted(_job_ids(jobs_folder) - before)
            if submitted and shutil.which("scancel"):
                subprocess.run(["scancel", *submitted], capture_output=True, timeout=30)
            raise

    return launch


def _job_ids(folder: Path) -> set[str]:
    """The SLURM job ids (`123`, or `123_4` for an array task) of submitit's job folders."""
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)}


class _SacctOnce(logging.Filter):
    """submitit warns at each status poll when SLURM keeps no accounting (no sacct): once."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if not _SacctOnce.said:
            _SacctOnce.said = True
            record.msg, record.args = (
                "SLURM keeps no job accounting (sacct fails): job states come from submitit's "
                "own files",
                (),
            )
            return True
        return False


def _quiet_sacct() -> None:
    log = logging.getLogger("submitit")
    if not any(isinstance(f, _SacctOnce) for f in log.filters):
        log.addFilter(_SacctOnce())
