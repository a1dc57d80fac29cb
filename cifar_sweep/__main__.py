"""python -m cifar_sweep [overrides] [-m]: one run, or a sweep with -m."""

import logging
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cifar_sweep.checks import check, check_objective
from cifar_sweep.config_dir import CONF
from cifar_sweep.data import tree
from cifar_sweep.errors import UserError, exit_with, interruptible, one_line_errors

log = logging.getLogger("cifar_sweep")
# Hydra 1.4 instantiates configured callbacks and plugins without a whitelist; ours are trusted.
warnings.filterwarnings(
    "ignore",
    message=r"hydra\.utils\.instantiate\(\) resolved _target_='(cifar_sweep|hydra_plugins)\.",
)

# Lightning doubts a OneCycleLR stepped per epoch; scheduler.interval=epoch is a deliberate choice.
warnings.filterwarnings("ignore", message=r"A `OneCycleLR` scheduler is using 'interval': 'epoch'")


class NoCudaHomeNotice(logging.Filter):
    """torch.compile on a CPU imports cpp_extension, which notices a CUDA toolkit without a GPU:
    nothing a CPU run can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


logging.getLogger("torch.utils.cpp_extension").addFilter(NoCudaHomeNotice())


@hydra.main(config_path=str(CONF), config_name="config")
def run(cfg: DictConfig) -> float | list[float]:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    stopped = f"the run stopped before it finished; {out_dir} holds what it wrote so far"
    with interruptible(stopped, reraise=hc.mode == RunMode.MULTIRUN):
        if "trial" in cfg and hc.mode == RunMode.RUN:  # a rank of a trial on several devices
            from cifar_sweep.sweep.trial_process import reported

            return reported(lambda: checked_run(cfg, hc, out_dir), out_dir)
        return checked_run(cfg, hc, out_dir)


def checked_run(cfg: DictConfig, hc, out_dir: Path) -> float | list[float]:
    job = "trial" in cfg  # a sweep's job: in the sweep process, or processes of its own
    try:
        if hc.mode == RunMode.MULTIRUN:
            tree.hold()  # the files as the first trial found them: listed once, not per trial
        check_objective(cfg)  # before the slow imports: a bad value fails in a second
        check(cfg)
        # imported here so Lightning's loggers attach after Hydra has configured logging
        from cifar_sweep.trackers.runs import tracked
        from cifar_sweep.train import objective

        trial = sweep_trial(cfg, hc)
        callbacks = pruning_callbacks(cfg, trial)
        single = not job  # a final run gets the evaluation report; trials do not
        beats = heartbeat_callbacks(trial, hc.sweeper)
        changed = changed_values_callbacks(cfg)
        with tracked(cfg, trial=trial, out_dir=out_dir) as run_cfg:  # logged into its runs
            metrics = fit(run_cfg, out_dir, [*callbacks, *changed, *beats], evaluate=single)
            for callback in callbacks:
                callback.raise_if_pruned()
            value = objective(metrics, cfg.objective)
        if single:
            log.info(announce(metrics, cfg, out_dir))
        if trial is not None and cfg.repeats > 1:
            from cifar_sweep.repeats import seeds
            from cifar_sweep.sweep.contract import OBJECTIVE_STD, SEEDS, objective_names

            std = [metrics[f"{name}_std"] for name in objective_names(cfg.objective)]
            trial.set_user_attr(SEEDS, seeds(cfg))
            trial.set_user_attr(OBJECTIVE_STD, std[0] if len(std) == 1 else std)
        return value
    except UserError as e:
        if job or hc.mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed trial with this reason and goes on
        exit_with(e, log)


def fit(cfg: DictConfig, out_dir: Path, callbacks: list, *, evaluate: bool) -> dict:
    """One training run, or one per seed (`repeats`), or one per fold (`dataset.folds`).
    Only an evaluated run tests, unless test_in_trials or a test/ objective asks for it."""
    from cifar_sweep.crossval import cross_validate
    from cifar_sweep.repeats import repeat
    from cifar_sweep.train import train

    test = evaluate or cfg.test_in_trials or tests_objective(cfg)

    def once(run_cfg: DictConfig, run_dir: Path, run_callbacks: list) -> dict:
        if run_cfg.dataset.get("folds"):
            return cross_validate(run_cfg, run_dir, run_callbacks, evaluate=evaluate, test=test)
        return train(run_cfg, run_dir, run_callbacks, evaluate=evaluate, test=test)

    if cfg.repeats > 1:
        return repeat(cfg, out_dir, callbacks, once, evaluate=evaluate)
    return once(cfg, out_dir, callbacks)


def tests_objective(cfg: DictConfig) -> bool:
    """Whether the objective is a test/ metric (a sweep with dataset.val_size=0)."""
    from cifar_sweep.sweep.contract import objective_names

    return any(str(n).startswith("test/") for n in objective_names(cfg.objective))


def announce(metrics: dict, cfg: DictConfig, out_dir: Path) -> str:
    """The run's last line: where its outputs are and its headline figures; over folds or
    seeds, their mean ± std."""
    from cifar_sweep.sweep.contract import objective_names

    names = dict.fromkeys([*objective_names(cfg.objective), "test/acc"])
    over = [f"{metrics[k]:g} folds" for k in ("cv/folds",) if k in metrics]
    over += [f"{metrics[k]:g} seeds" for k in ("repeats",) if k in metrics]
    figures = [
        f"{k}={metrics[k]:.4f}" + (f" ± {metrics[k + '_std']:.4f}" if k + "_std" in metrics else "")
        for k in names
        if k in metrics
    ]
    per = f" (mean ± std over {' x '.join(over)})" if over else ""
    report = ", evaluation.json" if (out_dir / "evaluation.json").exists() else ""
    return f"run done: {'  '.join(figures)}{per}; {out_dir} holds metrics.json{report}"


def sweep_trial(cfg: DictConfig, hc):
    """In a sweep job: the trial the sweeper handed this job; None in a plain run, and on the
    ranks after the first of a trial on several devices (rank 0 alone reaches the study)."""
    if "trial" not in cfg:
        return None
    from cifar_sweep.sweep.ownership import take_over
    from cifar_sweep.sweep.storage import job_trial
    from cifar_sweep.sweep.trial_process import rank, started_by_its_worker

    if rank() > 0:
        return None

    trial = job_trial(cfg, hc.sweeper)
    if not started_by_its_worker():  # the worker owns a trial of ranks until it tells the end
        take_over(trial)  # a job in a process of its own (submitit, joblib) owns its trial
    return trial


def pruning_callbacks(cfg: DictConfig, trial) -> list:
    """Report the objective to the trial each epoch, for the pruner (single objectives only);
    on every rank of a trial on several devices, to stop them all in the same epoch."""
    if "trial" not in cfg or not isinstance(cfg.objective, str):
        return []
    from cifar_sweep.sweep.pruning import ReportToTrial

    return [ReportToTrial(trial, monitor=cfg.objective)]


def changed_values_callbacks(cfg: DictConfig) -> list:
    """A PBT interval's own values set on the optimizer its checkpoint restores (on every rank)."""
    changes = list((cfg.get("trial") or {}).get("changes") or [])
    if not changes:
        return []
    from cifar_sweep.sweep.changes import SetChangedValues

    return [SetChangedValues(cfg.optimizer, changes)]


def heartbeat_callbacks(trial, sweeper) -> list:
    """Beat the trial's heartbeat while training makes progress (sweep jobs only)."""
    if trial is None:
        return []
    from cifar_sweep.sweep import heartbeat

    return heartbeat.callbacks(trial, sweeper.heartbeat_s)


def main() -> None:
    with one_line_errors():
        run()


if __name__ == "__main__":
    main()
