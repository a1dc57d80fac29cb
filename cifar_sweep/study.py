"""Opening a study's storage the same way in the sweeper and in its jobs."""

import random
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import make_url

from cifar_sweep.errors import UserError


def masked(url: str) -> str:
    """The storage URL with any password replaced by ***, for logs."""
    if url.startswith("journal:"):
        return url
    return make_url(url).render_as_string(hide_password=True)


def refuse_literal_password(raw_url: str | None) -> None:
    """Passwords come from the environment (${oc.env:VAR}): Hydra saves configs to outputs/."""
    if not raw_url or raw_url.startswith("journal:") or "${" in raw_url:
        return
    if make_url(raw_url).password:
        raise UserError(
            "hydra.sweeper.storage holds a literal password, which Hydra would save under "
            "outputs/; write it as postgresql://user:${oc.env:PGPASSWORD}@host/db"
        )


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


def sweeper_storage(sweeper_cfg):
    """The storage that a config's hydra.sweeper section names, with its heartbeat settings."""
    return open_storage(
        sweeper_cfg.storage,
        heartbeat_s=sweeper_cfg.heartbeat_s,
        grace_s=sweeper_cfg.grace_s,
        max_retry=sweeper_cfg.max_retry,
    )


def load_trial(sweeper_cfg, study_name: str, trial_id: int, pruner) -> optuna.trial.Trial:
    """The running trial a sweeper handed to this job, to report to and ask about pruning."""
    storage = sweeper_storage(sweeper_cfg)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    return optuna.trial.Trial(study, trial_id)
