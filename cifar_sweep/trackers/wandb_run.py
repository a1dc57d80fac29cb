"""A job's W&B runs: which run a trial, seed, fold or single run logs into, and its end.

The run id derives from what the run is, so a run that goes on continues its W&B run
(`resume="allow"`, WandbLogger's own): a trial's from its study and its point's first trial (a
retry or a promotion is a new trial), a single run's from its folder (`resume=` runs there
again). One process runs trial after trial, and W&B keeps one current run per process, so each
ends with `wandb.finish()` (a WandbLogger would otherwise take over the previous trial's run).
"""

import hashlib
import sys
from pathlib import Path

import optuna
from omegaconf import DictConfig

from cifar_sweep.sweep.contract import PROMOTED_FROM, RETRY_OF


def first_attempt(trial: optuna.trial.Trial) -> int:
    """The number of the first trial of `trial`'s point, through every retry and promotion."""
    trials = trial.study.get_trials(deepcopy=False)
    number = trial.number
    while (earlier := _goes_on_from(trials[number].user_attrs)) is not None:
        number = earlier
    return number


def _goes_on_from(attrs: dict) -> int | None:
    """The trial a retry or a promotion goes on from; None for a point's first trial."""
    return attrs.get(RETRY_OF, attrs.get(PROMOTED_FROM))


def fill(node: DictConfig, *, name: str, trial, out_dir: Path) -> None:
    """Set the run's id, name, project and group in the `logger.wandb` node (a copy's)."""
    if trial is not None:
        study = trial.study.study_name
        number = first_attempt(trial)
        digest = hashlib.sha1(study.encode()).hexdigest()[:8]
        node.id, node.name = f"{digest}-trial-{number:04d}", f"trial-{number:04d}"
        node.project, node.group = node.project or study, node.group or study
    else:
        digest = hashlib.sha1(str(out_dir.absolute()).encode()).hexdigest()[:12]
        node.id, node.name, node.project = f"run-{digest}", out_dir.name, node.project or name


def part(node: DictConfig, part: str) -> None:
    """A seed's or fold's own run beside its trial's (W&B runs do not nest)."""
    node.id, node.name = f"{node.id}-{part}", f"{node.name}-{part}"


def finish(state: str) -> None:
    """End this process's current run with its state in the summary (complete, pruned, fail,
    stopped); nothing when no run was started."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    wandb.run.summary["state"] = state
    wandb.finish(exit_code=0 if state in ("complete", "pruned") else 1)
