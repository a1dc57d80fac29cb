"""hydra-optuna-sweeper's sweeper, with its study set-up and sweep loop replaced.

What changes (each a measured problem of the stock sweeper): jobs get their trial, so pruners work
and `optuna.TrialPruned` is recorded PRUNED; NaN, exceptions and out-of-memory are FAIL with a
reason, within a failure budget; `n_trials` counts the study's finished trials, so a rerun or a
second worker continues the same study; `workers` starts asynchronous worker processes pinned to
devices (workers), a trial on several devices as processes of their own (ranks); trials of dead
workers are failed and retried at once where their process can be seen, after heartbeats elsewhere
(recovery, ownership), which jobs beat as they progress; known points and earlier studies seed the
study (warm_start); job folders are trial numbers; one report is written at the end.
Search-space parsing, the custom search space and trial configuration are the library's.
"""

import hashlib
import json
import logging
import math
import sys

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import OmegaConf, read_write
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from cifar_sweep import report
from cifar_sweep.errors import UserError, exit_with
from cifar_sweep.instantiate import build
from cifar_sweep.sweep import contract, slurm, warm_start, workers
from cifar_sweep.sweep.contract import states
from cifar_sweep.sweep.loop import WorkerLoop
from cifar_sweep.sweep.pbt import PBTPruner
from cifar_sweep.sweep.ranks import Ranks
from cifar_sweep.sweep.storage import masked, open_storage, pruner
from cifar_sweep.sweep.sweep_checks import devices_per_trial
from cifar_sweep.trackers.where import looks_with_tensorboard, where_logged

log = logging.getLogger(__name__)


def _is_discrete(dist) -> bool:
    return isinstance(dist, CategoricalDistribution | IntDistribution) or (
        isinstance(dist, FloatDistribution) and dist.step is not None
    )


def _ended(study: optuna.Study, n_trials: int) -> bool:
    """Whether no trial runs and the study holds its n_trials finished trials (a point queued
    after that, e.g. an interrupted one's, waits for a later sweep and does not hold the report)."""
    n = states(study)
    return not n[contract.RUNNING] and sum(n[k] for k in contract.FINISHED) >= n_trials


def tracked_study(config, study: optuna.Study, space: dict, sampler, *, launching: bool):
    """The study's MLflow runs with `logger=mlflow` (trackers.mlflow_study), else None."""
    if (config.get("logger") or {}).get("mlflow") is None:
        return None  # and mlflow, a second of imports, is never loaded
    from cifar_sweep.trackers.mlflow_study import open_study_runs

    return open_study_runs(config, study, space=space, sampler=sampler, launching=launching)


def pinned(devices, *, per_trial: int, accelerator: str) -> str:
    """workers.pin, and a warning when the device named is a GPU this machine does not have."""
    device = workers.pin(devices, per_trial=per_trial, accelerator=accelerator)
    if device not in ("auto", "cpu"):
        import torch

        if not torch.cuda.is_available():
            log.warning(
                "hydra.sweeper.devices=%s: no CUDA GPU is visible, so 'device %s' is only a "
                "label; the trials run where trainer.accelerator puts them (the CPU here)",
                OmegaConf.to_container(devices) if OmegaConf.is_config(devices) else devices,
                device,
            )
    return device


class CifarOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(
        self,
        *,
        sampler,
        pruner,
        direction,
        storage,
        study_name,
        n_trials,
        n_jobs,
        max_failure_rate,
        params,
        custom_search_space,
        heartbeat_s,
        grace_s,
        db_outage_s,
        max_retry,
        workers,
        devices,
        worker,
        enqueue,
        warm_start,
        plots,
        per_layer=None,
        pbt=None,  # read from the config by storage.pruner, in the sweep and in each job
    ):
        super().__init__(
            None,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            custom_search_space,
            params,
        )
        self.sampler_cfg = sampler
        self.heartbeat = {"heartbeat_s": heartbeat_s, "grace_s": grace_s}
        self.outage_s = db_outage_s
        self.max_retry = max_retry
        self.workers, self.devices, self.worker = workers, devices, worker
        if OmegaConf.is_config(enqueue):
            enqueue = OmegaConf.to_container(enqueue)
        self.seeds = {"enqueue": enqueue, "warm_start": warm_start}
        self.plots = plots

    def sweep(self, arguments: list[str]) -> None:
        try:
            self._sweep(arguments)
        except UserError as e:
            exit_with(e, log)
        except KeyboardInterrupt:  # Ctrl-C: the loop has queued the running trials again
            print("interrupted: running trials are queued to run first next time", file=sys.stderr)
            sys.exit(130)

    def _sweep(self, arguments: list[str]) -> None:
        # resolved once, here: each job composes the sweep config again where it runs (Hydra's
        # load_sweep_config, from hydra.overrides.hydra), and a submitit job, itself a SLURM
        # array task, would resolve ${oc.env:SLURM_ARRAY_JOB_ID} to its own array's id
        with read_write(self.config.hydra):
            folder = str(self.config.hydra.sweep.dir)
            self.config.hydra.sweep.dir = folder
            self.config.hydra.overrides.hydra.append(f"hydra.sweep.dir={contract.quoted(folder)}")
        if not self.storage:
            raise UserError("hydra.sweeper.storage is empty: a sweep needs a study storage")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise UserError(f"hydra.sweeper.workers={self.workers} must be an integer >= 1")
        space, fixed, fixed_overrides, from_cli = self._space(arguments)
        sampler, grid_size = self._sampler(space, from_cli, arguments)
        n_trials = grid_size or self.n_trials
        directions = self._get_directions()
        the_study = optuna.create_study(
            study_name=self._study_name(space, fixed, fixed_overrides, directions, sampler),
            storage=open_storage(self.storage, **self.heartbeat, outage_s=self.outage_s),
            sampler=sampler,
            pruner=pruner(self.config.hydra.sweeper),
            directions=directions,
            load_if_exists=True,
        )
        if isinstance(the_study.pruner, PBTPruner):  # hydra.sweeper.n_trials is not read
            n_trials = the_study.pruner.n_trials
        log.info(
            "study %s in %s: %s, %s, %d trials wanted, %d finished already",
            the_study.study_name,
            masked(self.storage),
            type(sampler).__name__,
            type(the_study.pruner).__name__,
            n_trials,
            sum(states(the_study)[k] for k in contract.FINISHED),
        )
        names = contract.objective_names(self.config.objective)
        the_study.set_user_attr(contract.OBJECTIVE, names)  # names the values in later reports
        launching = not workers.started_by_a_sweep()  # a command typed, or a SLURM array task
        task = slurm.array_task()
        worker = self.worker if self.worker is not None else task or 0
        threads = slurm.use_given_cpus()
        if task is not None:
            log.info("worker %d: SLURM array task, %s CPU threads", worker, threads or "default")
        if launching and not task:  # one array task (task 0) seeds the study, not each
            dists = warm_start.distributions(space, self.custom_search_space_extender, self.config)
            warm_start.enqueue(the_study, self.seeds["enqueue"], dists, n_trials)
            warm_start.copy_finished(
                the_study, self.seeds["warm_start"], self.config.hydra.sweeper, dists
            )
        runs = tracked_study(self.config, the_study, space, sampler, launching=launching)
        done = False
        try:
            if self.workers > 1:
                trainer = self.config.trainer
                per_trial = devices_per_trial(trainer)
                workers.run(
                    self.config,
                    self.workers,
                    self.devices,
                    per_trial=per_trial,
                    accelerator=trainer.accelerator,
                )
            else:
                loop_args = (the_study, n_trials, grid_size, names, space, fixed, fixed_overrides)
                self._loop(*loop_args, runs=runs)
            done = True
        finally:
            # one report: by the process the user started, or the array task that ends the study
            if launching and (task is None or _ended(the_study, n_trials)):
                self._report(the_study, done=done, runs=runs)

    def _loop(self, study, n_trials, grid_size, names, space, fixed, fixed_overrides, *, runs):
        """This process's own worker loop (a worker of several, or the only one)."""
        launching = not workers.started_by_a_sweep()
        task = slurm.array_task()
        worker = self.worker if self.worker is not None else task or 0
        per_trial = devices_per_trial(self.config.trainer)
        accelerator = self.config.trainer.accelerator
        if per_trial > 1:  # each trial as processes of its own, one per device
            launch = Ranks(config=self.config, per_trial=per_trial)
        else:
            launch = slurm.launch_cancelling(self.launcher)
        WorkerLoop(
            study=study,
            n_trials=n_trials,
            n_jobs=self.n_jobs,
            grid=bool(grid_size),
            failure_budget=self.max_failure_rate * n_trials,
            launch=launch,
            overrides=lambda trials: self._configure_trials(trials, space, fixed, fixed_overrides),
            names=names,
            **self.heartbeat,
            max_retry=self.max_retry,
            worker=worker,
            device=pinned(self.devices, per_trial=per_trial, accelerator=accelerator),
            label="" if launching and task is None else f"worker {worker}: ",
            sweep_dir=self.config.hydra.sweep.dir,
            runs=runs,
        ).run()

    def _report(self, study: optuna.Study, *, done: bool, runs) -> None:
        """The report and the sweep's last lines. A sweep stopped by an error or Ctrl-C says so,
        with a report only when some trial finished, and no "next" line."""
        out = self.config.hydra.sweep.dir
        if not done and not sum(states(study)[k] for k in contract.FINISHED):
            return
        files = report.write(study, out, plots=self.plots)
        report.announce(study, out, files, what="sweep done" if done else "sweep stopped")
        if runs is not None:  # the report as the study run's artifacts, the best run tagged
            print(f"mlflow: {runs.report(out, files, done=done)}", flush=True)
        for line in where_logged(self.config.get("logger"), out):
            print(line, flush=True)
        tensorboard = looks_with_tensorboard(self.config.get("logger"))
        if done:  # what a first-time user does next: look, then retrain the best
            look = f"tensorboard --logdir {out} (every trial's curves); " if tensorboard else ""
            print(
                f"next: {look}the best retrained and tested: python -m cifar_sweep.retrain "
                "with the same overrides",
                flush=True,
            )

    def _space(self, arguments: list[str]):
        """Sweep values on the command line replace the YAML space; plain values stay fixed."""
        cli_space, cli_fixed, cli_fixed_overrides = create_params_from_overrides(arguments)
        if cli_space:
            self.custom_search_space_extender = None
            space, fixed, fixed_overrides = cli_space, cli_fixed, cli_fixed_overrides
        else:
            space, fixed, fixed_overrides = create_params_from_overrides(
                self._parse_sweeper_params_config() + arguments
            )
        for name in fixed:
            space.pop(name, None)
        if not space and not self.custom_search_space_extender:
            raise UserError(
                "no search space: set hydra.sweeper.params (search_space=...) or give sweep "
                "values on the command line, e.g. 'optimizer.lr=tag(log, interval(1e-4, 1e-1))'"
            )
        return space, fixed, fixed_overrides, bool(cli_space)

    def _sampler(self, space: dict, from_cli: bool, arguments: list[str]):
        """The configured sampler; a grid when asked for, or when a command-line space is finite."""
        target = (self.sampler_cfg or {}).get("_target_", "")
        chose_sampler = any(a.lstrip("+").split("=")[0] == "sweeper" for a in arguments)
        auto_grid = from_cli and not chose_sampler and all(map(_is_discrete, space.values()))
        if not (target.endswith("GridSampler") or auto_grid):
            return build(self.sampler_cfg), None
        if self.custom_search_space_extender or not all(map(_is_discrete, space.values())):
            ranges = [k for k, d in space.items() if not _is_discrete(d)] or ["custom space"]
            raise UserError(f"{ranges[0]}: sweeper=grid needs finite lists (a,b,c or choice())")
        grid = {name: self._to_grid_sampler_choices(d) for name, d in space.items()}
        seed = (self.sampler_cfg or {}).get("seed")
        return optuna.samplers.GridSampler(grid, seed=seed), math.prod(map(len, grid.values()))

    def _study_name(self, space, fixed, fixed_overrides, directions, sampler) -> str:
        """<name>-<hash>: the same command (space, fixed values, sampler) finds its study again."""
        if self.study_name:
            return self.study_name
        raw = OmegaConf.to_container(self.config.hydra.sweeper, resolve=True)
        key = {
            "space": {k: repr(v) for k, v in sorted(space.items())},
            "fixed": sorted(f"{k}={v}" for k, v in fixed.items()) + sorted(fixed_overrides),
            "directions": directions,
            "sampler": type(sampler).__name__,
            "custom": [raw.get("custom_search_space"), raw.get("per_layer")],
            **({"pbt": raw["pbt"]} if raw.get("pbt") else {}),  # other keys: another population
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.config.get('name', 'study')}-{digest[:8]}"
