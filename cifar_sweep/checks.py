"""Checks of config values that would otherwise fail deep inside torch, or silently do nothing.

Kept free of torch imports so the command line rejects bad values at once.
"""

from omegaconf import DictConfig, OmegaConf

from cifar_sweep.errors import UserError

POSITIVE = ("optimizer.lr", "dataset.batch_size", "dataset.eval_batch_size", "trainer.max_epochs")


def check(cfg: DictConfig) -> None:
    """Raise a UserError naming the first key whose value cannot work."""
    if cfg.dataset.source != "synthetic" and cfg.dataset.root is None:
        raise UserError("dataset.root is required for this dataset: dataset.root=/path/to/tree")
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise UserError(f"{key}={value} must be a number > 0")
    folds = OmegaConf.select(cfg, "dataset.folds")
    if folds is not None and (not isinstance(folds, int) or folds < 2):
        raise UserError(f"dataset.folds={folds} must be null or an integer >= 2")
    repeats = cfg.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"repeats={repeats} must be an integer >= 1")
    if repeats > 1 and folds:
        raise UserError(
            f"repeats={repeats} with dataset.folds={folds}: choose one (seeds or folds)"
        )
    monitor = OmegaConf.select(cfg, "scheduler.monitor")
    if monitor and monitor.startswith("val/") and OmegaConf.select(cfg, "dataset.val_size") == 0:
        raise UserError(
            f"scheduler.monitor={monitor} needs a validation split (dataset.val_size>0)"
        )
    if OmegaConf.select(cfg, "optimizer.weight_decay", default=0) < 0:
        raise UserError(f"optimizer.weight_decay={cfg.optimizer.weight_decay} must be >= 0")
