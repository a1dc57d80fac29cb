"""What a sweep process takes from SLURM when it runs as a job: an array task is a worker (its
index the task id), it uses the CPUs it was given, its trials record the job, and a trial whose
job the scheduler no longer runs is recovered at once, from any node that can ask the scheduler.

Read from SLURM's own environment variables and `scontrol`; nothing here when not under SLURM.
"""

import os
import shutil
import subprocess


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
