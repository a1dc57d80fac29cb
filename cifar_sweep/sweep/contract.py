"""The contract between the sweeper and its jobs: trial keys, failure reasons, storage, pruner.

The sweeper hands each job its trial as `+trial.{study,id,number}` overrides; the job reopens
the study from the storage that `hydra.sweeper` names, with the same pruner, reports to the
trial and beats its heartbeat. Every name both sides, and the reports, rely on is spelled here
and only here: attribute names, failure kinds, what a trial counts as (classify), job folders.
"""

import random
import time
import warnings
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from cifar_sweep.errors import UserError
from cifar_sweep.targets import build

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

# Failure kinds. Only the CHARGED ones are the trial's fault and spend the failure budget.
DIVERGED, ERROR = "diverged", "error"
CHARGED = (DIVERGED, ERROR)
INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM while it ran; its point is queued again
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


def quoted(value: str) -> str:
    """`value` as one Hydra override value, whatever characters it holds."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def trial_overrides(study_name: str, trial: optuna.trial.Trial) -> list[str]:
    """What the sweeper adds to a job's overrides so the job can find its trial, and, for a
    retry of a stopped trial, the folder whose last finished epoch it goes on from."""
    resume = trial.user_attrs.get(RESUME)
    return [
        f"+trial.study={study_name}",
        f"+trial.id={trial._trial_id}",
        f"+trial.number={trial.number}",
        *([f"resume={quoted(resume)}"] if resume else []),
    ]


def fail(study: optuna.Study, trial: optuna.trial.Trial, kind: str, reason: str) -> None:
    """Tell the study that `trial` failed, with its kind and reason."""
    trial.set_user_attr(FAIL_KIND, kind)
    trial.set_user_attr(FAIL_REASON, reason)
    study.tell(trial, state=TrialState.FAIL)


def masked(url: str) -> str:
    """The storage URL with any password replaced by ***, for logs."""
    if url.startswith("journal:"):
        return url
    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, *, heartbeat_s: int, grace_s: int, on_stale=None):
    """An Optuna storage for `url`: sqlite/postgresql/mysql URLs or journal:<file>.

    RDB storages get heartbeats, so a trial left RUNNING by a killed or hung process is failed
    by the next sweep process, which then calls `on_stale(study, trial)` (the sweep's retry).
    """
    # Heartbeats and stale-trial retries are "experimental" in Optuna since 2.8; we rely on them,
    # and drive heartbeats around ask/tell ourselves, which Optuna's warning does not expect.
    # (Set here, not at import: Hydra imports plugins inside warnings.catch_warnings().)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several workers take turns writing
    for _ in range(5):
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
                heartbeat_stale_trial_callback=on_stale,
            )
        except (ImportError, ModuleNotFoundError) as e:
            raise UserError(f"hydra.sweeper.storage={masked(url)}: driver missing ({e})") from None
        except Exception as e:  # server down, bad credentials, or another worker creating it
            error = str(e).splitlines()[0]
            time.sleep(0.5 + random.random())  # workers starting together race to create tables
    raise UserError(f"hydra.sweeper.storage={masked(url)}: cannot open ({error})")


def storage(sweeper: DictConfig, url: str | None = None):
    """The storage that a config's `hydra.sweeper` section names (or `url`), with the section's
    heartbeat settings (for a job's own beats; only the sweep retries stale trials)."""
    return open_storage(
        url or sweeper.storage, heartbeat_s=sweeper.heartbeat_s, grace_s=sweeper.grace_s
    )


def pruner(sweeper: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner that `hydra.sweeper.pruner` configures; null means no pruning (Optuna's own
    default for no pruner would be a MedianPruner)."""
    return build(sweeper.pruner) if sweeper.pruner else optuna.pruners.NopPruner()


def load_study(sweeper: DictConfig, name: str) -> optuna.Study:
    """A study of the `hydra.sweeper` storage, with that section's pruner."""
    return optuna.load_study(study_name=name, storage=storage(sweeper), pruner=pruner(sweeper))


def job_trial(cfg: DictConfig, sweeper: DictConfig) -> optuna.trial.Trial | None:
    """In a sweep job: the running trial the sweeper handed it; None in a plain run."""
    if "trial" not in cfg:
        return None
    return optuna.trial.Trial(load_study(sweeper, cfg.trial.study), cfg.trial.id)
