"""The study's storage: opened with heartbeats and patience, the pruner, a job's trial.

Sweep processes and jobs open the same storage that `hydra.sweeper.storage` names; a job
reattaches to the trial its sweep asked for (`+trial.id`). A database that goes away for a while
(a restart, a failover, SQLite's lock held long) costs each call retries with backoff for up to
`hydra.sweeper.db_outage_s`, not the sweep; one gone for longer stops it in one line, and the
trials then in flight are recovered by the next run (their processes are gone).
"""

import functools
import logging
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

log = logging.getLogger(__name__)
# RDBStorage's calls that reach the database, as Optuna's cache calls them too (the private
# ones are its names for the cache: optuna_private.py keeps the rest of its private API)
DB_CALLS = (
    "create_new_study delete_study set_study_user_attr set_study_system_attr "
    "get_study_id_from_name get_study_name_from_id get_study_directions get_study_user_attrs "
    "get_study_system_attrs get_all_studies create_new_trial set_trial_param "
    "get_trial_id_from_study_id_trial_number set_trial_state_values "
    "set_trial_intermediate_value set_trial_user_attr set_trial_system_attr get_trial "
    "get_all_trials get_best_trial record_heartbeat _get_stale_trial_ids _get_trials "
    "_create_new_trial _set_trial_param _get_best_trial_id"
).split()


def _connection_lost(e: BaseException) -> bool:
    """Whether `e`, or what it was raised from, says the database could not be reached (a
    closed or refused connection, a locked SQLite file), as opposed to a refused statement."""
    from sqlalchemy import exc

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, exc.OperationalError | exc.InterfaceError):
            return True
        if isinstance(e, exc.DBAPIError) and e.connection_invalidated:
            return True
        e = e.__cause__ or e.__context__
    return False


def _patient(method):
    """`method`, retried with backoff while the database cannot be reached, for up to the
    storage's `outage_s`; then one UserError naming the storage."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        deadline, delay = None, 0.25
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as e:
                if not _connection_lost(e):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.outage_s
                    why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e)
                    log.warning("storage: the database does not answer (%s); waiting", why)
                if now >= deadline:
                    raise UserError(
                        f"hydra.sweeper.storage={masked(self.url)}: the database has not "
                        f"answered for hydra.sweeper.db_outage_s={self.outage_s:g} s; rerun the "
                        "same command once it is back: the trials in flight are recovered then"
                    ) from None
                time.sleep(min(delay, deadline - now) * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)

    return call


class PatientRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose database calls wait out an outage (`_patient`)."""

    def __init__(self, url: str, *, outage_s: float, **kwargs):
        self.outage_s = outage_s
        super().__init__(url, **kwargs)


for _name in DB_CALLS:
    setattr(PatientRDBStorage, _name, _patient(getattr(RDBStorage, _name)))


def masked(url: str) -> str:
    """The storage URL with any password replaced by ***, for logs."""
    if url.startswith("journal:"):
        return url
    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, *, heartbeat_s: int, grace_s: int, outage_s: float = 60):
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
    engine_kwargs = {"pool_pre_ping": True}  # a pooled connection a restart closed is replaced
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several workers take turns writing
    for _ in range(5):
        try:
            return PatientRDBStorage(
                url,
                outage_s=outage_s,
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
        url or sweeper.storage,
        heartbeat_s=sweeper.heartbeat_s,
        grace_s=sweeper.grace_s,
        outage_s=sweeper.db_outage_s,
    )


def pruner(sweeper: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner that `hydra.sweeper.pruner` configures; null means no pruning (Optuna's own
    default for no pruner would be a MedianPruner). With `hydra.sweeper.pbt` (sweeper=pbt),
    PBT's, which ends each interval of a member (pbt.py; the checks refuse another pruner)."""
    if sweeper.get("pbt"):
        return build(sweeper.pbt)
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
