"""k-fold cross-validation (`dataset.folds=k`): one run per fold, and the mean and std of each
metric over the folds."""

import copy
from pathlib import Path

from omegaconf import DictConfig

from cifar_sweep.repeats import every_run, pruned, write_summary
from cifar_sweep.trackers.runs import part
from cifar_sweep.train import train


def cross_validate(
    cfg: DictConfig,
    out_dir: Path,
    callbacks: list | None = None,
    *,
    evaluate: bool = False,
    test: bool = True,
) -> dict:
    """k-fold cross-validation (`dataset.folds=k`) over the training images, the test split
    untouched: one run per fold under out_dir/fold<i>/, each validating on its own part of the
    training images and training on the rest (datamodule.fold_split), and the mean (and std,
    as <name>_std) of each metric over folds; with `evaluate`, each fold's evaluation report and
    their aggregate. A pruner sees the first fold only (its epochs are the trial's steps); a pruned
    first fold ends the trial's folds."""
    runs, dirs = [], []
    for fold in range(cfg.dataset.folds):
        fold_callbacks = callbacks if fold == 0 else every_run(callbacks)
        dirs.append(out_dir / f"fold{fold}")
        fold_cfg = cfg
        if cfg.get("resume"):  # each fold goes on from its own folder's last epoch
            fold_cfg = copy.deepcopy(cfg)
            fold_cfg.resume = str(Path(cfg.resume) / f"fold{fold}")
        with part(fold_cfg, f"fold{fold}", dirs[-1]) as fold_cfg:  # its own tracker runs
            runs.append(
                train(fold_cfg, dirs[-1], fold_callbacks, evaluate=evaluate, test=test, fold=fold)
            )
        if pruned(callbacks or []):
            break
    return write_summary(runs, dirs, out_dir, count="cv/folds", evaluate=evaluate)
