"""Retrain a finished study's best parameters and evaluate on the test split, in one command:

    python -m cifar_sweep.retrain +experiment=nas_hyperband retrain.epochs=30
    python -m cifar_sweep.retrain +experiment=seq_vs_branch_random retrain.per=model

The same overrides as the sweep find the same storage and study (`retrain.study` names another).
Writes each run (metrics.json, evaluation report) under outputs/runs/<time>/<label>/ and a
comparison table of the runs.
"""

import logging
from pathlib import Path

import hydra
import optuna
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from optuna.trial import TrialState

from cifar_sweep.config_dir import CONF
from cifar_sweep.errors import UserError, exit_with, one_line_errors
from cifar_sweep.sweep import contract

log = logging.getLogger("cifar_sweep.retrain")


def find_study(sweeper, name: str | None, prefix: str) -> optuna.Study:
    """The named study, or the newest one whose name starts with `<name>-`."""
    storage = contract.storage(sweeper)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    matches = [
        s
        for s in summaries
        if (s.study_name == name if name else s.study_name.startswith(f"{prefix}-"))
    ]
    if not matches:
        raise UserError(
            f"retrain.study={name or prefix + '-*'}: no such study in {sweeper.storage}; "
            f"studies there: {[s.study_name for s in summaries]}"
        )
    newest = max(matches, key=lambda s: s.datetime_start or s._study_id)
    return optuna.load_study(study_name=newest.study_name, storage=storage)


def best_trials(study: optuna.Study, per: str | None) -> dict[str, optuna.trial.FrozenTrial]:
    """The best completed trial, or the best per value of the parameter `per`."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not done:
        raise UserError(f"study {study.study_name} has no completed trial to retrain")
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    groups: dict[str, list] = {}
    for t in done:
        groups.setdefault(str(t.params.get(per, "best")) if per else "best", []).append(t)
    return {label: max(ts, key=lambda t: sign * t.value) for label, ts in groups.items()}


@hydra.main(config_path=str(CONF), config_name="config")
def run(cfg: DictConfig) -> None:
    from cifar_sweep import compare
    from cifar_sweep.train import train

    hc = HydraConfig.get()
    try:
        study = find_study(hc.sweeper, cfg.retrain.study, cfg.name)
        runs = {}
        for label, trial in best_trials(study, cfg.retrain.per).items():
            overrides = [
                *hc.overrides.task,
                *(f"{k}={v}" for k, v in trial.params.items()),
                f"trainer.max_epochs={cfg.retrain.epochs}",
                *(["dataset.val_size=0", "objective=test/acc"] if cfg.retrain.merge_val else []),
            ]
            log.info(
                "retraining trial %d of %s (%s): %s",
                trial.number,
                study.study_name,
                label,
                trial.params,
            )
            run_cfg = compose(config_name="config", overrides=overrides)
            metrics = train(run_cfg, Path(hc.runtime.output_dir) / label, evaluate=True)
            runs[label] = (trial.value, metrics)
        print(compare.table(runs, Path(hc.runtime.output_dir)))
    except UserError as e:
        exit_with(e, log)


if __name__ == "__main__":
    with one_line_errors():
        run()
