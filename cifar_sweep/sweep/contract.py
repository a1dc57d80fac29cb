"""The contract between the sweeper and its jobs: names and rules, nothing that acts.

The sweeper hands each job its trial as `+trial.{study,id,number}` overrides; the job reopens
the study (storage.py), reports to the trial and beats its heartbeat: the one road back from a
job to the study. Every name both sides, and the reports, rely on is spelled here and only here:
attribute names, failure kinds, what a trial counts as (classify), job folders.
"""

from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from cifar_sweep.sweep.optuna_private import trial_id

# Our attribute names carry a prefix: hydra-optuna-sweeper stores every fixed override as a user
# attribute named by its key (`device=cpu` would overwrite a "device"), and ':' is never in a key.
PREFIX = "cs:"
OWNER = PREFIX + "owner"  # {host, boot, pidns, timens, pid, ticks, worker, device, trial}
FAIL_KIND = PREFIX + "fail_kind"  # one of KINDS: what the failure budget reads
FAIL_REASON = PREFIX + "fail_reason"  # the failure in one line, for people
WARM_START = PREFIX + "warm_start"  # on a trial copied from another study: "<study>#<n>"
RETRY_OF = PREFIX + "retry_of"  # on a queued retry: the number of the trial it repeats
RETRIES = PREFIX + "retries"  # on a queued retry: how many times its point has been retried
SEEDS = PREFIX + "seeds"  # with repeats > 1: the seeds averaged
OBJECTIVE_STD = PREFIX + "objective_std"  # with repeats > 1: the objective's spread over seeds
OBJECTIVE = PREFIX + "objective"  # study attribute: the metric name(s) the values are
JOB_BEATS = PREFIX + "job_beats"  # system attribute: the job beats the heartbeat from now on
RUN_DIR = PREFIX + "run_dir"  # the trial's job folder (absolute), where it keeps last.ckpt
RESUME = PREFIX + "resume"  # on a queued retry: the job folder whose last.ckpt it goes on from
START_UP = PREFIX + "start_up"  # system attribute: the seeded start-up point a new trial took
POINT = PREFIX + "point"  # on a retry or promotion: the number of its point's first trial
PAUSED = PREFIX + "paused"  # on a trial ASHA paused (pruner.promote): the epochs of its rung
PROMOTED_FROM = PREFIX + "promoted_from"  # on a promotion: the paused trial it goes on from
PBT_MEMBER = PREFIX + "pbt_member"  # on a PBT interval (sweeper=pbt): its member, 0-based
PBT_GENERATION = PREFIX + "pbt_generation"  # on a PBT interval: its member's intervals before it
PBT_PARENT = PREFIX + "pbt_parent"  # on a PBT interval: the trial whose checkpoint it goes on from
PBT_NEXT = (
    PREFIX + "pbt_next"
)  # on a PBT interval that ended: {parent, params, exploit} of its next
LINEAGE = (PBT_MEMBER, PBT_GENERATION, PBT_PARENT)  # what a retry of a PBT interval keeps
WORKER = PREFIX + "worker:"  # study system attribute per sweep process: its owner record, or None
MLFLOW_RUN = PREFIX + "mlflow_run"  # the trial's MLflow run id (a retry's is its first attempt's)
MLFLOW_STUDY_RUN = PREFIX + "mlflow_study_run"  # study attribute: the study's own MLflow run id

# A trial on several devices runs as processes of their own (ranks.py starts them,
# trial_process.py is their side): rank 0 leaves its outcome in the job folder, and each rank
# dies with the sweep process whose pid this environment variable gives.
OUTCOME = "trial_outcome.json"
SWEEP_PID = "CIFAR_SWEEP_TRIAL_OF"

# Failure kinds. Only the CHARGED ones are the trial's fault and spend the failure budget.
DIVERGED, ERROR = "diverged", "error"
CHARGED = (DIVERGED, ERROR)
INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM while it ran; its point is queued again
SHARED = "shared_cause"  # no swept value changes it (a full disk): the sweep stops, point queued
WORKER_DIED = "worker_died"  # its process died or went silent; retried up to max_retry
NOT_RUN = "not_run"  # asked past n_trials, or a retry whose first run finished after all

# What classify() calls a trial: a failure is called by its kind.
COMPLETE, PRUNED, RUNNING, WAITING = "complete", "pruned", "running", "waiting"
IMPORTED = "imported"  # copied by a warm start: informs the sampler, never ran here
FINISHED = (COMPLETE, PRUNED)  # what n_trials counts
LIVE = (COMPLETE, PRUNED, RUNNING)  # what holds one of the n_trials places


def classify(trial: optuna.trial.FrozenTrial) -> str:
    """The one answer to "what is this trial" for the loop, the surplus check and the report."""
    if WARM_START in trial.user_attrs:
        return IMPORTED
    if trial.state == TrialState.FAIL:
        # Optuna's stale-trial check fails a trial without a word; every other path names it
        return trial.user_attrs.get(FAIL_KIND, WORKER_DIED)
    return trial.state.name.lower()


def point_of(trial: optuna.trial.FrozenTrial) -> int:
    """The configuration a trial runs, as the number of its first trial: its retries and
    promotions are segments of it."""
    return trial.user_attrs.get(POINT, trial.number)


def states(study: optuna.Study) -> Counter:
    """How many of the study's trials (all workers') classify() puts in each class."""
    return Counter(classify(t) for t in study.get_trials(deepcopy=False))


def job_batches(trials: list) -> list[list]:
    """Trials split into runs of consecutive numbers. The job-folder rule: a job's folder is its
    trial's number, and Hydra numbers a batch's folders from its first, one by one."""
    batches: list[list] = []
    for t in trials:
        if batches and batches[-1][-1].number + 1 == t.number:
            batches[-1].append(t)
        else:
            batches.append([t])
    return batches


def objective_names(objective) -> list[str]:
    """`objective` (one metric name, or a list for a multi-objective study) as a list."""
    return [objective] if isinstance(objective, str) else list(objective)


def job_dir(sweep_dir, number: int) -> Path:
    """The job folder of trial `number` (hydra.sweep.subdir is the trial number)."""
    return Path(sweep_dir).absolute() / str(number)


def source(trial) -> int | None:
    """The number of the trial whose run `trial` goes on from (from its last.ckpt when it has
    RESUME): a retry's, a promotion's or a PBT interval's; None for a fresh trial."""
    attrs = trial.user_attrs
    return attrs.get(RETRY_OF, attrs.get(PROMOTED_FROM, attrs.get(PBT_PARENT)))


def quoted(value: str) -> str:
    """`value` as one Hydra override value, whatever characters it holds."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def trial_overrides(study_name: str, trial: optuna.trial.Trial) -> list[str]:
    """What the sweeper adds to a job's overrides so the job can find its trial, and, for a
    retry of a stopped trial, the folder whose last finished epoch it goes on from; for a PBT
    interval, the keys whose values may differ from that checkpoint's (`trial.changes`)."""
    resume = trial.user_attrs.get(RESUME)
    changes = sorted(trial.params) if resume and PBT_MEMBER in trial.user_attrs else []
    return [
        f"+trial.study={study_name}",
        f"+trial.id={trial_id(trial)}",
        f"+trial.number={trial.number}",
        *([f"resume={quoted(resume)}"] if resume else []),
        *([f"+trial.changes=[{','.join(map(quoted, changes))}]"] if changes else []),
    ]


def fail(study: optuna.Study, trial: optuna.trial.Trial, kind: str, reason: str) -> None:
    """Tell the study that `trial` failed, with its kind and reason."""
    trial.set_user_attr(FAIL_KIND, kind)
    trial.set_user_attr(FAIL_REASON, reason)
    study.tell(trial, state=TrialState.FAIL)
