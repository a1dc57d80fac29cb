"""k-fold cross-validation (`dataset.folds=k`): one run per fold and the mean of each metric."""

import json
from pathlib import Path

from omegaconf import DictConfig

from cifar_sweep.repeats import pruned
from cifar_sweep.train import train


def cross_validate(cfg: DictConfig, out_dir: Path, callbacks: list | None = None) -> dict:
    """k-fold cross-validation (`dataset.folds=k`) over the training images, the test split
    untouched: one run per fold under out_dir/fold<i>/, and the mean of each metric over folds.
    A pruner sees the first fold only (its epochs are the trial's steps); a pruned first fold
    ends the trial's folds."""
    runs = []
    for fold in range(cfg.dataset.folds):
        fold_callbacks = callbacks if fold == 0 else None
        runs.append(train(cfg, out_dir / f"fold{fold}", fold_callbacks, fold=fold))
        if pruned(callbacks or []):
            break
    keys = set.intersection(*(set(r) for r in runs))
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in sorted(keys)}
    mean["cv/folds"] = len(runs)
    (out_dir / "metrics.json").write_text(json.dumps(mean, indent=2, sort_keys=True))
    return mean
