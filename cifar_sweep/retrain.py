"""Retrain a finished study's best parameters and evaluate on the test split, in one command:

    python -m cifar_sweep.retrain +experiment=nas_hyperband retrain.epochs=30
    python -m cifar_sweep.retrain +experiment=seq_vs_branch_random retrain.per=model

The same overrides as the sweep find the same storage and study: its name is computed as the
sweep computes it (`retrain.study` names another). A multi-objective study has no single best
trial: `retrain.trial=N` picks one of its Pareto front. Writes each run (metrics.json, evaluation
report, the config that ran in .hydra/) under outputs/runs/<time>/<label>/ and a comparison table.
The same command with `resume=<that folder>` (or the same `hydra.run.dir`) goes on where it
stopped: finished runs are kept, the others resume from their last epoch.
"""

import json
import logging
import warnings
from pathlib import Path

import hydra
import optuna
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from cifar_sweep.config_dir import CONF
from cifar_sweep.errors import UserError, did_you_mean, exit_with, interruptible, one_line_errors
from cifar_sweep.sweep.contract import PBT_MEMBER
from cifar_sweep.sweep.storage import masked, sweeper_storage
from cifar_sweep.values import is_int

log = logging.getLogger("cifar_sweep.retrain")
# Hydra 1.4 instantiates configured callbacks and plugins without a whitelist; ours are trusted.
warnings.filterwarnings(
    "ignore",
    message=r"hydra\.utils\.instantiate\(\) resolved _target_='(cifar_sweep|hydra_plugins)\.",
)


def sweep_arguments(task: list[str]) -> list[str]:
    """The command line as the sweep saw it: the retrain's own keys are not the sweep's."""
    return [o for o in task if not o.lstrip("+~").startswith(("retrain.", "resume="))]


def swept_study_name(arguments: list[str], config: DictConfig | None = None) -> str:
    """The study name `python -m cifar_sweep -m <arguments>` uses, by the sweeper's own steps
    (space, sampler, hash); `config`: the sweep's composed config, if already at hand."""
    from cifar_sweep.sweep.sweeper import CifarOptunaSweeperImpl

    if config is None:
        config = GlobalHydra.instance().hydra.compose_config(
            "config", arguments, run_mode=RunMode.MULTIRUN
        )
    fields = {k: v for k, v in config.hydra.sweeper.items() if k != "_target_"}
    sweeper = CifarOptunaSweeperImpl(**fields)
    sweeper.config = config
    space, fixed, fixed_overrides, from_cli = sweeper._space(arguments)
    sampler, _ = sweeper._sampler(space, from_cli, arguments)
    return sweeper._study_name(space, fixed, fixed_overrides, sweeper._get_directions(), sampler)


def find_study(sweeper: DictConfig, name: str | None, prefix: str, arguments: list[str]):
    """The named study; else the one these overrides sweep; else the only `<prefix>-*` one."""
    storage = sweeper_storage(sweeper)
    names = optuna.get_all_study_names(storage)
    if name is not None:
        if name not in names:
            raise UserError(
                f"retrain.study={name}: no such study in {masked(sweeper.storage)}"
                f"{did_you_mean(name, names)} (studies: {', '.join(names) or 'none'})"
            )
        return optuna.load_study(study_name=name, storage=storage)
    swept = swept_study_name(arguments)
    if swept in names:
        return optuna.load_study(study_name=swept, storage=storage)
    mine = [n for n in names if n.startswith(f"{prefix}-")]
    if len(mine) != 1:
        raise UserError(
            f"retrain.study: these overrides sweep study {swept}, which is not in "
            f"{masked(sweeper.storage)}; name one with retrain.study=NAME "
            f"({prefix}-* studies there: {', '.join(mine) or 'none'})"
        )
    log.warning("no study %s for these overrides; retraining the only one: %s", swept, mine[0])
    return optuna.load_study(study_name=mine[0], storage=storage)


def chosen_trials(study: optuna.Study, retrain: DictConfig) -> dict[str, optuna.trial.FrozenTrial]:
    """retrain.trial; else the best completed trial, or the best per value of `retrain.per`."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if retrain.trial is not None:
        picked = [t for t in done if t.number == retrain.trial]
        if not picked:
            numbers = ", ".join(str(t.number) for t in done) or "none"
            raise UserError(
                f"retrain.trial={retrain.trial}: not a completed trial of {study.study_name} "
                f"(completed: {numbers})"
            )
        return {f"trial{retrain.trial}": picked[0]}
    if not done:
        raise UserError(f"study {study.study_name} has no completed trial to retrain")
    if len(study.directions) > 1:
        front = "; ".join(f"{t.number}: {t.values}" for t in study.best_trials)
        raise UserError(
            f"retrain.trial: study {study.study_name} has {len(study.directions)} objectives, so "
            f"no single best trial; pick one of its Pareto front with retrain.trial=N ({front})"
        )
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    best = lambda ts: max(ts, key=lambda t: sign * t.value)  # noqa: E731
    per = retrain.per
    if not per:
        return {"best": best(done)}
    params = {p for t in study.trials for p in t.params}
    if per not in params:
        raise UserError(
            f"retrain.per={per}: not a parameter of study {study.study_name}"
            f"{did_you_mean(per, params)} (parameters: {', '.join(sorted(params))})"
        )
    groups: dict[str, list] = {}
    for t in done:
        groups.setdefault(str(t.params[per]), []).append(t)
    choices = {str(c) for t in study.trials if per in t.distributions
               for c in getattr(t.distributions[per], "choices", ())}  # fmt: skip
    for value in sorted(choices - set(groups)):
        log.warning("retrain.per=%s: %s=%s has no completed trial; not retrained", per, per, value)
    return {label: best(ts) for label, ts in groups.items()}


def values(study: optuna.Study, trial: optuna.trial.FrozenTrial, epochs: int) -> list[str]:
    """The overrides of `trial`'s values: its params for `epochs`; a PBT member's, which changed
    mid-run, as the piecewise schedule of its lineage for its own epochs."""
    if PBT_MEMBER not in trial.user_attrs:
        return [*(f"{k}={v}" for k, v in trial.params.items()), f"trainer.max_epochs={epochs}"]
    from cifar_sweep.sweep import pbt_replay

    replay = pbt_replay.overrides(study, trial)
    log.info("trial %d is a PBT member: replayed from scratch as %s", trial.number, replay)
    return replay


def replaced(trial: optuna.trial.FrozenTrial) -> tuple[str, ...]:
    """The sweep's overrides a retrain of `trial` drops: a PBT member's scheduler=constant (its
    replay is scheduler=piecewise)."""
    return ("scheduler=",) if PBT_MEMBER in trial.user_attrs else ()


def save_config(run_cfg: DictConfig, overrides: list[str], run_dir: Path) -> None:
    """The config that ran, where Hydra keeps a run's: <run>/.hydra/config.yaml."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(run_cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")


@hydra.main(config_path=str(CONF), config_name="config")
def run(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    with interruptible(f"the retrain stopped; {out_dir} holds the runs written so far"):
        try:
            retrain(cfg, hc, out_dir)
        except UserError as e:
            exit_with(e, log)


def check_retrain(retrain: DictConfig) -> None:
    """The retrain's own keys, named as themselves (not as the trainer.max_epochs they become)."""
    if not is_int(retrain.epochs) or retrain.epochs < 1:
        raise UserError(f"retrain.epochs={retrain.epochs} must be an integer >= 1")
    if retrain.trial is not None and (not is_int(retrain.trial) or retrain.trial < 0):
        raise UserError(f"retrain.trial={retrain.trial} must be null or a trial number (>= 0)")
    if not isinstance(retrain.merge_val, bool):
        raise UserError(f"retrain.merge_val={retrain.merge_val} must be true or false")


def retrain(cfg: DictConfig, hc, out_dir: Path) -> None:
    from cifar_sweep import compare, resume
    from cifar_sweep.trackers.runs import tracked
    from cifar_sweep.train import train

    check_retrain(cfg.retrain)
    arguments = sweep_arguments(list(hc.overrides.task))
    study = find_study(hc.sweeper, cfg.retrain.study, cfg.name, arguments)
    runs = {}
    for label, trial in chosen_trials(study, cfg.retrain).items():
        run_dir = out_dir / label
        # this folder's earlier retrain, cut short or not
        earlier = any((run_dir / p).exists() for p in (resume.LAST, resume.PREVIOUS))
        overrides = [
            *(o for o in hc.overrides.task if not o.startswith(("resume=", *replaced(trial)))),
            *values(study, trial, cfg.retrain.epochs),
            *(["dataset.val_size=0", "objective=test/acc"] if cfg.retrain.merge_val else []),
            *([f"resume={run_dir}"] if earlier else []),
        ]
        log.info(
            "retraining trial %d of %s (%s): %s",
            trial.number,
            study.study_name,
            label,
            trial.params,
        )
        run_cfg = compose(config_name="config", overrides=overrides)
        if earlier and (run_dir / "metrics.json").exists():
            resume.same_config(run_cfg)  # or an error naming the key that differs
            metrics = json.loads((run_dir / "metrics.json").read_text())
            log.info("%s: finished earlier in %s; kept", label, run_dir)
        else:
            save_config(run_cfg, overrides, run_dir)
            with tracked(run_cfg, trial=None, out_dir=run_dir) as logged_cfg:  # a tracker's run
                metrics = train(logged_cfg, run_dir, evaluate=True)
        runs[label] = (trial.values[0] if len(trial.values) == 1 else None, metrics)
    if len(runs) == 1:  # one run: the retrain's own config is the one that ran
        save_config(run_cfg, overrides, out_dir)
    print(compare.table(runs, out_dir))
    figures = "  ".join(f"{label}: test/acc={m['test/acc']:.4f}" for label, (_, m) in runs.items())
    log.info("retrain done: %s; %s holds each run and comparison.md", figures, out_dir)


def main() -> None:
    with one_line_errors():
        run()


if __name__ == "__main__":
    main()
