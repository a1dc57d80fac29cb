"""The checks of a sweep (-m), run by the sweeper before its study opens and before Optuna,
SQLAlchemy or matplotlib load: hydra.sweeper's own values, the storage (its form, its folder, a
server that answers, no literal password), the devices of a trial and of each worker, the
pruner, PBT's keys (pbt_checks), and every value the search space can draw, so a value that
would fail every trial that draws it is named once, at once.
"""

import re
import socket
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cifar_sweep.checks import (
    check,
    check_objective,
    check_values,
    is_int,
    is_number,
    several_devices,
)
from cifar_sweep.config_dir import CONF
from cifar_sweep.errors import UserError, did_you_mean
from cifar_sweep.sweep.pbt_checks import check_pbt

SWEEPER_VALUES = {
    "heartbeat_s": ("an integer > 0 (seconds)", lambda v: is_int(v) and v > 0),
    "grace_s": ("an integer > 0 (seconds)", lambda v: is_int(v) and v > 0),
    "db_outage_s": ("a number of seconds >= 0", lambda v: is_number(v) and v >= 0),
    "max_retry": ("an integer >= 0", lambda v: is_int(v) and v >= 0),
    "workers": ("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "plots": ("true or false", lambda v: isinstance(v, bool)),
}
DATABASES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
STORAGE_FORMS = "sqlite:///FILE, postgresql://USER@HOST/DB, mysql://USER@HOST/DB or journal:FILE"


def check_sweep(cfg: DictConfig) -> None:
    """The checks of a sweep (-m), before its study is opened: hydra.sweeper's values, then every
    value that would fail each trial the same way."""
    sweeper = cfg.hydra.sweeper
    for key in ("n_trials", "n_jobs"):
        if not is_int(sweeper[key]) or sweeper[key] < 1:
            raise UserError(f"hydra.sweeper.{key}={sweeper[key]} must be an integer >= 1")
    for key, (rule, ok) in SWEEPER_VALUES.items():
        if key in sweeper and not ok(sweeper[key]):
            raise UserError(f"hydra.sweeper.{key}={sweeper[key]} must be {rule}")
    rate = sweeper.max_failure_rate
    if not is_number(rate) or not 0 <= rate <= 1:
        raise UserError(f"hydra.sweeper.max_failure_rate={rate} must be a number in [0, 1]")
    _storage(OmegaConf.to_container(sweeper, resolve=False).get("storage"), cfg.hydra.sweep.dir)
    _devices_per_trial(cfg)
    _pruner(cfg)
    swept = _space(cfg)
    check_pbt(cfg, swept)
    check_objective(cfg)
    check(cfg)
    if not any(key == "dataset" or key.startswith("dataset.") for key in swept):
        from cifar_sweep.data import sources

        sources.fetch(cfg.dataset)  # a download that cannot work fails here, not in each trial


def devices_per_trial(trainer: DictConfig) -> int:
    """The devices each trial of a sweep trains on: trainer.devices as a count, `auto` counted
    as Lightning would count it here, never left for Lightning to expand inside a trial (where
    a worker's pinned devices would change the answer)."""
    devices = trainer.devices
    if devices == "auto":
        return auto_device_count(trainer.accelerator)
    if is_int(devices) and devices >= 1:
        return devices
    if not several_devices(devices) and devices not in (0, "0"):
        return 1  # one device named by its index ([0]): the worker's first
    raise UserError(
        f"trainer.devices={devices}: a sweep takes the number of devices each trial trains on "
        "(trainer.devices=2, or auto); which ones comes from hydra.sweeper.devices, e.g. "
        "[[0,1],[2,3]]"
    )


def _devices_per_trial(cfg: DictConfig) -> None:
    """Trials of k > 1 devices run as processes of their own (sweep/ranks.py), one at a time
    per worker, whose ranks the worker starts itself: no batches of them, no launcher that
    would run them elsewhere, no strategy that starts its own processes, and worker devices
    that make whole groups of k."""
    per_trial = devices_per_trial(cfg.trainer)
    if per_trial == 1:
        return
    devices = f"trainer.devices={cfg.trainer.devices}"
    if cfg.trainer.devices != per_trial:
        devices += f" ({per_trial} devices here)"
    n_jobs = cfg.hydra.sweeper.n_jobs
    if n_jobs > 1:
        raise UserError(
            f"hydra.sweeper.n_jobs={n_jobs} with {devices}: a trial on several devices runs "
            f"as processes of its own; run {n_jobs} at once with hydra.sweeper.workers={n_jobs}"
        )
    launcher = OmegaConf.select(cfg, "hydra.launcher._target_", default="") or ""
    if not launcher.endswith(".BasicLauncher"):
        option = OmegaConf.select(cfg, "hydra.runtime.choices.hydra/launcher", default=launcher)
        raise UserError(
            f"hydra/launcher={option} with {devices}: a worker starts each trial's ranks "
            "itself; under SLURM, submit examples/slurm/sweep.sbatch (one task per group)"
        )
    strategy = str(cfg.trainer.strategy)
    if any(word in strategy for word in ("spawn", "fork", "notebook")):
        raise UserError(
            f"trainer.strategy={strategy} with {devices}: the sweep starts a trial's ranks "
            "itself; use trainer.strategy=ddp (or auto)"
        )
    from cifar_sweep.sweep.workers import groups

    groups(cfg.hydra.sweeper.devices, per_trial=per_trial, accelerator=cfg.trainer.accelerator)


def auto_device_count(accelerator: str) -> int:
    """The devices `trainer.devices=auto` takes: every visible GPU on a GPU run, else one."""
    if accelerator not in ("auto", "gpu", "cuda"):
        return 1
    import torch

    return max(torch.cuda.device_count(), 1)


def _pruner(cfg: DictConfig) -> None:
    """One direction per objective; and no pruner on a multi-objective study (Optuna cannot
    prune one, and the header would name a pruner that never acts)."""
    direction = cfg.hydra.sweeper.direction
    directions = [direction] if isinstance(direction, str) else list(direction)
    objectives = [cfg.objective] if isinstance(cfg.objective, str) else list(cfg.objective)
    if len(directions) != len(objectives):
        raise UserError(
            f"hydra.sweeper.direction={directions} gives {len(directions)} direction(s) for "
            f"{len(objectives)} objective(s) (objective={objectives})"
        )
    target = OmegaConf.select(cfg, "hydra.sweeper.pruner._target_", default=None)
    if len(directions) > 1 and target not in (None, "optuna.pruners.NopPruner"):
        option = OmegaConf.select(cfg, "hydra.runtime.choices.pruner", default=None) or target
        raise UserError(
            f"pruner={option}: a multi-objective study ({len(directions)} objectives) cannot "
            "prune; use pruner=none"
        )


def _space(cfg: DictConfig) -> list[str]:
    """Every search-space bound in order, before a trial asks for it: the search_space group's
    and the command line's sweep values. Returns the swept keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False).get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()]
    lines += list(OmegaConf.select(cfg, "hydra.overrides.task", default=None) or [])
    parser = OverridesParser.create()
    swept = []
    for line in lines:
        try:
            [override] = parser.parse_overrides([line])
        except Exception:
            continue  # Hydra has named what does not parse
        if not override.is_sweep_override():
            continue
        key = override.get_key_element().lstrip("+~")
        if key == "trainer.devices":
            raise UserError(
                "trainer.devices cannot be swept: the workers share the devices out once, in "
                "groups of one size; run one sweep per device count"
            )
        swept.append(key)
        for value in _sweep_values(key, override.value()):
            _swept_value(cfg, key, value)
    return swept


def _sweep_values(key: str, sweep) -> list:
    """A sweep's extreme values (every value of a choice); refuses an empty or reversed one."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    if isinstance(sweep, IntervalSweep):
        if sweep.start > sweep.end:
            raise UserError(
                f"{key}=interval({sweep.start}, {sweep.end}): the low bound comes first, "
                f"interval({sweep.end}, {sweep.start})"
            )
        if "log" in sweep.tags and sweep.start <= 0:
            raise UserError(f"{key}: a log-scale interval needs a low bound > 0")
        return [sweep.start, sweep.end]
    if isinstance(sweep, RangeSweep):
        values = [] if sweep.step == 0 else list(sweep.range())
        if not values:
            raise UserError(
                f"{key}=range({sweep.start}, {sweep.stop}, {sweep.step}) holds no value"
            )
        return [values[0], values[-1]]
    if isinstance(sweep, ChoiceSweep):
        if not sweep.list:
            raise UserError(f"{key}=choice(): name at least one value")
        return [v for v in sweep.list if isinstance(v, str | int | float | bool)]
    return []


def _swept_value(cfg: DictConfig, key: str, value) -> None:
    """One value a trial may get: an option of its group, or a value the checks accept (else
    every trial that draws it fails the same way)."""
    import copy

    group = CONF / key
    if key in (OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {}):
        options = sorted(p.stem for p in group.glob("*.yaml"))
        if group.is_dir() and str(value) not in options:
            raise UserError(
                f"{key}={value}: no such option{did_you_mean(value, options)} "
                f"(options: {', '.join(options)}; a value of the sweep over {key})"
            )
        return
    if OmegaConf.select(cfg, key, default=None) is None:
        return  # a key the search space adds (per-layer sizes), or one set to null
    trial = copy.deepcopy(cfg)
    OmegaConf.set_readonly(trial, False)
    OmegaConf.update(trial, key, value, force_add=True)
    try:
        check_values(trial)
    except UserError as e:
        raise UserError(f"{e} (a value of the sweep over {key})") from None


def _storage(url, sweep_dir: str = "") -> None:
    """A storage URL that Optuna can open: refused before a minute of connection retries."""
    if not isinstance(url, str) or not url or url.startswith("journal:"):
        return
    if "${" not in url and re.search(r"://[^:/@]*:[^@/]+@", url):
        raise UserError(
            "hydra.sweeper.storage holds a literal password, which Hydra would save under "
            "outputs/; write it as postgresql://user:${oc.env:PGPASSWORD}@host/db"
        )
    scheme = url.partition("://")[0] if "://" in url else ""
    database = scheme.split("+")[0]
    if database not in DATABASES:
        named = f"unknown database {database!r}" if database else "not a storage URL"
        raise UserError(
            f"hydra.sweeper.storage={url}: {named}{did_you_mean(database, DATABASES)} "
            f"(use {STORAGE_FORMS})"
        )
    if database == "sqlite" and not url.startswith(f"{scheme}:///"):
        raise UserError(
            f"hydra.sweeper.storage={url}: a sqlite URL has three slashes before a relative "
            "path (sqlite:///outputs/studies.db) and four before an absolute one"
        )
    if database == "sqlite" and "${" not in url:
        _sqlite_folder(url, Path(sweep_dir))
    _server_answers(url)


def _sqlite_folder(url: str, sweep_dir: Path) -> None:
    """The database's folder exists, or is one the sweep creates anyway (outputs/ by default):
    a typo in the path would otherwise make a folder and an empty study there."""
    path = url.partition(":///")[2].partition("?")[0]
    if not path or path == ":memory:":
        return
    folder = Path(path).absolute().parent
    if folder.is_dir() or folder in Path(sweep_dir).absolute().parents:
        return
    raise UserError(
        f"hydra.sweeper.storage={url}: the folder {folder} does not exist (create it first; "
        "only the sweep's own outputs/ folder is made for you)"
    )


def _server_answers(url: str) -> None:
    """A database server that answers at the URL's host and port (Optuna's own connection
    retries would take several seconds to say the same)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return  # Optuna names what is wrong with it
    port = parsed.port or {"postgresql": 5432, "mysql": 3306}.get(parsed.get_backend_name())
    if not parsed.host or not port or "${" in parsed.host:
        return  # a local socket, or a host named by an interpolation
    try:
        socket.create_connection((parsed.host, port), timeout=5).close()
    except OSError as e:
        raise UserError(
            f"hydra.sweeper.storage={url}: no database server answers at "
            f"{parsed.host}:{port} ({e.strerror or e})"
        ) from None
