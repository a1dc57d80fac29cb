"""The contract between the sweeper and its jobs: trial keys, failure reasons, storage, pruner.

The sweeper hands each job its trial as `+trial.{study,id,number}` overrides; the job reopens
the study from the storage that `hydra.sweeper` names, with the same pruner, and reports to the
trial. Everything both sides must agree on lives here.
"""

import random
import time
import warnings
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from cifar_sweep.errors import UserError
from cifar_sweep.targets import build

FAIL_REASON = "fail_reason"  # user attribute: why a trial is FAIL, in one line
WARM_START = "warm_start"  # user attribute of a trial copied from another study: "<study>#<n>"
# Every trial also records its worker, host, pid and device (user attributes of those names).


def objective_names(objective) -> list[str]:
    """`objective` (one metric name, or a list for a multi-objective study) as a list."""
    return [objective] if isinstance(objective, str) else list(objective)


def trial_overrides(study_name: str, trial: optuna.trial.Trial) -> list[str]:
    """What the sweeper adds to a job's overrides so the job can find its trial."""
    return [
        f"+trial.study={study_name}",
        f"+trial.id={trial._trial_id}",
        f"+trial.number={trial.number}",
    ]


def fail(study: optuna.Study, trial: optuna.trial.Trial, reason: str) -> None:
    """Tell the study that `trial` failed, with its reason."""
    trial.set_user_attr(FAIL_REASON, reason)
    study.tell(trial, state=TrialState.FAIL)


def masked(url: str) -> str:
    """The storage URL with any password replaced by ***, for logs."""
    if url.startswith("journal:"):
        return url
    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, *, heartbeat_s: int, grace_s: int, max_retry: int):
    """An Optuna storage for `url`: sqlite/postgresql/mysql URLs or journal:<file>.

    RDB storages get heartbeats, so a trial left RUNNING by a killed process is failed and its
    parameters retried (up to `max_retry` times) by the next sweep process.
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
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=max_retry
                ),
            )
        except (ImportError, ModuleNotFoundError) as e:
            raise UserError(f"hydra.sweeper.storage={masked(url)}: driver missing ({e})") from None
        except Exception as e:  # server down, bad credentials, or another worker creating it
            error = str(e).splitlines()[0]
            time.sleep(0.5 + random.random())  # workers starting together race to create tables
    raise UserError(f"hydra.sweeper.storage={masked(url)}: cannot open ({error})")


def storage(sweeper: DictConfig, url: str | None = None):
    """The storage that a config's `hydra.sweeper` section names (or `url`), with the section's
    heartbeat settings."""
    return open_storage(
        url or sweeper.storage,
        heartbeat_s=sweeper.heartbeat_s,
        grace_s=sweeper.grace_s,
        max_retry=sweeper.max_retry,
    )


def pruner(sweeper: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner that `hydra.sweeper.pruner` configures (Optuna's default when none is)."""
    return build(sweeper.pruner) if sweeper.pruner else optuna.pruners.MedianPruner()


def load_study(sweeper: DictConfig, name: str) -> optuna.Study:
    """A study of the `hydra.sweeper` storage, with that section's pruner."""
    return optuna.load_study(study_name=name, storage=storage(sweeper), pruner=pruner(sweeper))


def job_trial(cfg: DictConfig, sweeper: DictConfig) -> optuna.trial.Trial | None:
    """In a sweep job: the running trial the sweeper handed it; None in a plain run."""
    if "trial" not in cfg:
        return None
    return optuna.trial.Trial(load_study(sweeper, cfg.trial.study), cfg.trial.id)
