"""The study's storage: opened with heartbeats and retries, the pruner, a job's trial.

Sweep processes and jobs open the same storage that `hydra.sweeper.storage` names; a job
reattaches to the trial its sweep asked for (`+trial.id`).
"""

import random
import time
import warnings
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import make_url

from cifar_sweep.errors import UserError
from cifar_sweep.instantiate import build
from cifar_sweep.sweep.optuna_private import reattach


def masked(url: str) -> str:
    """The storage URL with any password replaced by ***, for logs."""
    if url.startswith("journal:"):
        return url
    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, *, heartbeat_s: int, grace_s: int):
    """An Optuna storage for `url`: sqlite/postgresql/mysql URLs or journal:<file>.

    RDB storages get heartbeats, so a trial left RUNNING by a hung process or an unreachable
    host is failed by any sweep process after `grace_s` (recovery.py) and its point retried.
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
            )
        except (ImportError, ModuleNotFoundError) as e:
            raise UserError(f"hydra.sweeper.storage={masked(url)}: driver missing ({e})") from None
        except Exception as e:  # server down, bad credentials, or another worker creating it
            error = str(e).splitlines()[0]
            time.sleep(0.5 + random.random())  # workers starting together race to create tables
    raise UserError(f"hydra.sweeper.storage={masked(url)}: cannot open ({error})")


def sweeper_storage(sweeper: DictConfig, url: str | None = None):
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
    return optuna.load_study(
        study_name=name, storage=sweeper_storage(sweeper), pruner=pruner(sweeper)
    )


def job_trial(cfg: DictConfig, sweeper: DictConfig) -> optuna.trial.Trial | None:
    """In a sweep job: the running trial the sweeper handed it; None in a plain run."""
    if "trial" not in cfg:
        return None
    return reattach(load_study(sweeper, cfg.trial.study), cfg.trial.id)
