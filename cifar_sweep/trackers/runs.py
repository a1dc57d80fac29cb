"""Which tracker run a job logs into: the config a run, trial, seed or fold trains with, its
trackers' run keys filled in (logger.mlflow.run_id, logger.wandb.id), and each run closed with
its files and how it ended. Without MLflow or W&B among the loggers, the config as it is."""

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from cifar_sweep.sweep.contract import MLFLOW_RUN


def _chosen(cfg: DictConfig) -> tuple:
    loggers = cfg.get("logger") or {}
    if rank_zero_only.rank != 0:  # the other devices of a DDP run log nothing (Lightning's rule)
        return None, None
    return loggers.get("mlflow"), loggers.get("wandb")


@contextmanager
def tracked(cfg: DictConfig, *, trial, out_dir: Path) -> Iterator[DictConfig]:
    """`cfg` for a run (trial None) or a sweep's trial: a single run's MLflow run is made here and
    ended on the way out; a trial's was made by the sweep, which ends it."""
    mlflow_node, wandb_node = _chosen(cfg)
    if mlflow_node is None and wandb_node is None:
        yield cfg
        return
    cfg = copy.deepcopy(cfg)  # the caller's stays as Hydra composed it
    run_id = None
    if mlflow_node is not None:
        from cifar_sweep.trackers import mlflow_run

        if trial is not None:
            run_id = trial.user_attrs.get(MLFLOW_RUN)
        if run_id is None:  # a run (or a trial of a sweeper that made none)
            run_id = mlflow_run.single_run(cfg.logger.mlflow, cfg.name, out_dir)
        cfg.logger.mlflow.run_id = run_id
    if wandb_node is not None:
        from cifar_sweep.trackers import wandb_run

        wandb_run.fill(cfg.logger.wandb, name=cfg.name, trial=trial, out_dir=out_dir)
    owned = trial is None or trial.user_attrs.get(MLFLOW_RUN) is None  # else the sweep ends it
    with _closed(cfg, run_id, out_dir, wandb=wandb_node is not None, owned=owned) as ready:
        yield ready


@contextmanager
def part(cfg: DictConfig, name: str, out_dir: Path) -> Iterator[DictConfig]:
    """`cfg` for one seed or fold (`name`: seed1, fold0) of a run or trial: its own MLflow run
    under the run's, its own W&B run; each ended on the way out."""
    mlflow_node, wandb_node = _chosen(cfg)
    parent = mlflow_node.run_id if mlflow_node is not None else None
    if parent is None and wandb_node is None:
        yield cfg
        return
    cfg = copy.deepcopy(cfg)
    run_id = None
    if parent is not None:
        from cifar_sweep.trackers import mlflow_run

        run_id = cfg.logger.mlflow.run_id = mlflow_run.part_run(mlflow_node, parent, name)
    if wandb_node is not None:
        from cifar_sweep.trackers import wandb_run

        wandb_run.part(cfg.logger.wandb, name)
    with _closed(cfg, run_id, out_dir, wandb=wandb_node is not None, owned=True) as ready:
        yield ready


@contextmanager
def _closed(cfg, run_id, out_dir: Path, *, wandb: bool, owned: bool) -> Iterator[DictConfig]:
    """`cfg`; on the way out its MLflow run `run_id` closed (with how the job ended when this
    job `owned` it) and its W&B run finished."""
    error = None
    try:
        yield cfg
    except BaseException as e:
        error = e
        raise
    finally:
        if run_id is not None:
            from cifar_sweep.trackers import mlflow_run

            ended = mlflow_run.status(error) if owned else None
            mlflow_run.close(cfg.logger.mlflow, run_id, out_dir, status=ended)
        if wandb:
            from cifar_sweep.trackers import wandb_run

            wandb_run.finish(_state(error))


def _state(error: BaseException | None) -> str:
    """How a run ended, as the W&B summary says it."""
    if error is None:
        return "complete"
    if isinstance(error, optuna.TrialPruned):
        return "pruned"
    return "stopped" if isinstance(error, KeyboardInterrupt | SystemExit) else "fail"
