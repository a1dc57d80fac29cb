"""Checks of config values that would otherwise fail deep inside torch, or silently do nothing.

Values first, with no torch import, so the command line rejects a bad one at once; then a listing
of an image tree; last the `_target_` arguments and augmentation ops, which import torch.
"""

import inspect
import os
import re
import socket
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.data import tree
from cifar_sweep.errors import UserError, did_you_mean

INTEGERS = ("dataset.batch_size", "dataset.eval_batch_size", "trainer.max_epochs")
# dataset.* keys that every source reads, and those of one source: any other key would be ignored
DATASET_KEYS = set(
    "source root cache_dir val_size split_seed folds batch_size drop_last eval_batch_size mean std "
    "augment".split()
)
SOURCE_KEYS = {
    "cifar10": set(),
    "folder": {"image_size"},
    "tiny_imagenet": {"image_size", "download"},
    "synthetic": set(
        "num_classes image_size channels train_per_class test_per_class noise".split()
    ),
}
SCHEDULER_KEYS = {"fn", "monitor", "interval", "warmup_epochs"}  # fn: its class's arguments
# the keys the code passes itself when it builds each target
PASSED = {
    "model": {"num_classes", "in_channels"},
    "optimizer": {"params"},
    "scheduler.fn": {"optimizer"},
}
DATABASES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
STORAGE_FORMS = "sqlite:///FILE, postgresql://USER@HOST/DB, mysql://USER@HOST/DB or journal:FILE"


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def unwritable(folder: Path) -> Path | None:
    """The first existing ancestor of `folder` if the folder cannot be created under it."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            ok = parent.is_dir() and os.access(parent, os.W_OK)
            return None if ok else parent
    return None


def check(cfg: DictConfig) -> None:
    """Raise a UserError naming the first key whose value cannot work."""
    _numbers(cfg)
    _scheduler(cfg)
    _dataset(cfg.dataset)
    for key, passed in PASSED.items():
        _arguments(key, OmegaConf.select(cfg, key), passed)
    from cifar_sweep.data.augment import build_augment

    build_augment(cfg.dataset.augment)  # an unknown op or parameter, named before the data loads


def check_sweep(cfg: DictConfig) -> None:
    """The checks of a sweep (-m), before its study is opened: hydra.sweeper's values, then every
    value that would fail each trial the same way."""
    sweeper = cfg.hydra.sweeper
    for key in ("n_trials", "n_jobs"):
        if not is_int(sweeper[key]) or sweeper[key] < 1:
            raise UserError(f"hydra.sweeper.{key}={sweeper[key]} must be an integer >= 1")
    rate = sweeper.max_failure_rate
    if not is_number(rate) or not 0 <= rate <= 1:
        raise UserError(f"hydra.sweeper.max_failure_rate={rate} must be a number in [0, 1]")
    _storage(OmegaConf.to_container(sweeper, resolve=False).get("storage"))
    check(cfg)


def val_count(val_size, n: int) -> int:
    """dataset.val_size as a number of the n training images: a count, or a fraction in (0, 1)."""
    count = round(val_size * n) if isinstance(val_size, float) else val_size
    if count >= n:
        raise UserError(
            f"dataset.val_size={val_size} must be below the {n} training images "
            "(a count, or a fraction in (0, 1) such as 0.1)"
        )
    if isinstance(val_size, float) and count == 0:
        raise UserError(f"dataset.val_size={val_size} is none of the {n} training images")
    return count


def _numbers(cfg: DictConfig) -> None:
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if not is_number(lr) or lr <= 0:
        raise UserError(f"optimizer.lr={lr} must be a number > 0")
    for key in INTEGERS:
        value = OmegaConf.select(cfg, key)
        if not is_int(value) or value <= 0:
            raise UserError(f"{key}={value} must be an integer > 0")
    wd = OmegaConf.select(cfg, "optimizer.weight_decay", default=0)
    if not is_number(wd) or wd < 0:
        raise UserError(f"optimizer.weight_decay={wd} must be a number >= 0")
    folds = OmegaConf.select(cfg, "dataset.folds")
    if folds is not None and (not is_int(folds) or folds < 2):
        raise UserError(f"dataset.folds={folds} must be null or an integer >= 2")
    repeats = cfg.get("repeats", 1)
    if not is_int(repeats) or repeats < 1:
        raise UserError(f"repeats={repeats} must be an integer >= 1")
    if repeats > 1 and folds:
        raise UserError(
            f"repeats={repeats} with dataset.folds={folds}: choose one (seeds or folds)"
        )


def _scheduler(cfg: DictConfig) -> None:
    fn_keys = {f"fn.{k}" for k in cfg.scheduler.get("fn") or {} if not k.startswith("_")}
    _known_keys("scheduler", cfg.scheduler, SCHEDULER_KEYS, suggest=SCHEDULER_KEYS | fn_keys)
    warmup, monitor = cfg.scheduler.warmup_epochs, cfg.scheduler.monitor
    if not is_int(warmup) or warmup < 0:
        raise UserError(f"scheduler.warmup_epochs={warmup} must be an integer >= 0")
    if warmup and monitor:
        raise UserError(
            f"scheduler.warmup_epochs={warmup} cannot come before a plateau schedule (it steps "
            f"on scheduler.monitor={monitor}): set scheduler.warmup_epochs=0 or another scheduler"
        )
    if monitor and monitor.startswith("val/") and cfg.dataset.val_size == 0:
        raise UserError(
            f"scheduler.monitor={monitor} needs a validation split (dataset.val_size>0)"
        )


def _known_keys(group: str, node: DictConfig, allowed: set[str], why: str = "", suggest=()) -> None:
    for key in node:
        if key not in allowed:
            raise UserError(
                f"{group}.{key}: no such key{why}{did_you_mean(key, suggest or allowed)} "
                f"(keys: {', '.join(sorted(allowed))})"
            )


def _dataset(d: DictConfig) -> None:
    if d.source not in SOURCE_KEYS:
        raise UserError(
            f"dataset.source={d.source}{did_you_mean(d.source, SOURCE_KEYS)} "
            f"(sources: {', '.join(SOURCE_KEYS)})"
        )
    _known_keys("dataset", d, DATASET_KEYS | SOURCE_KEYS[d.source], f" for source {d.source}")
    if d.source != "synthetic" and d.root is None:
        raise UserError("dataset.root is required for this dataset: dataset.root=/path/to/tree")
    size = d.val_size
    if not (is_int(size) and size >= 0) and not (isinstance(size, float) and 0 < size < 1):
        raise UserError(
            f"dataset.val_size={size} must be a count (an integer >= 0) or a fraction in (0, 1)"
        )
    if d.get("image_size") is not None and (not is_int(d.image_size) or d.image_size <= 0):
        raise UserError(f"dataset.image_size={d.image_size} must be null or an integer > 0")
    for key in ("mean", "std"):
        values = d[key]
        if values is not None and (
            not OmegaConf.is_list(values)
            or not values
            or not all(is_number(v) and (v > 0 or key == "mean") for v in values)
        ):
            rule = "numbers > 0" if key == "std" else "numbers"
            raise UserError(
                f"dataset.{key}={values} must be null (computed from the training images) or a "
                f"list of {rule}, one per channel"
            )
    if d.source == "folder" and not d.folds:  # before the heavy imports: the tree's file names
        listing = tree.image_folder(Path(d.root), stat=False)
        val_count(size, len(listing.files["train"]))
    elif d.source == "synthetic" and not d.folds:
        val_count(size, d.num_classes * d.train_per_class)


def _arguments(key: str, node: DictConfig, passed: set[str]) -> None:
    """Every key of a `_target_` node must be an argument of its target (a misspelt one would
    fail deep inside training, or be ignored)."""
    from hydra.utils import get_object

    try:
        target = get_object(node._target_)
    except Exception as e:
        raise UserError(f"{key}._target_={node._target_}: cannot import it ({e})") from None
    params = inspect.signature(target).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    accepted = set(params) - passed - {"self"}
    for name in node:
        if not name.startswith("_") and name not in accepted:
            raise UserError(
                f"{key}.{name}: {node._target_} takes no such argument"
                f"{did_you_mean(name, accepted)} (arguments: {', '.join(sorted(accepted))})"
            )


def _storage(url) -> None:
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
    _server_answers(url)


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


class CheckOutputDir(Callback):
    """Refuse an output folder that cannot be created, naming it (Hydra would show a traceback)."""

    def _check(self, key: str, folder: str) -> None:
        blocker = unwritable(Path(folder).absolute())
        if blocker is not None:
            message = f"{key}={folder}: cannot create it ({blocker} is not a writable folder)"
            print(f"error: {message}", file=sys.stderr)
            sys.exit(1)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)
