"""hydra-optuna-sweeper's sweeper, with the sweep loop replaced.

What changes (each a measured problem of the stock loop): jobs get their trial, so pruners work
and `optuna.TrialPruned` is recorded PRUNED; NaN, exceptions and out-of-memory are FAIL with a
reason, within a failure budget; `n_trials` counts the study's finished trials, so a rerun or a
second worker continues the same study; job folders are trial numbers; trials left RUNNING by a
killed process are failed and retried (heartbeats); a report is written at the end.
Search-space parsing, the custom search space and trial configuration are the library's.
"""

import hashlib
import json
import logging
import math
import threading
from collections import Counter
from contextlib import contextmanager

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from cifar_sweep import report
from cifar_sweep.errors import UserError, exit_with
from cifar_sweep.study import masked, open_storage, refuse_literal_password
from hydra_plugins.cifar_sweep_optuna import config  # noqa: F401  registers hydra/sweeper=cifar_optuna

log = logging.getLogger(__name__)
TRUSTED = ["optuna.*", "hydra_plugins.*", "cifar_sweep.*"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS = "not run: the study already had n_trials (another worker asked at the same moment)"


def _is_discrete(dist) -> bool:
    return isinstance(dist, CategoricalDistribution | IntDistribution) or (
        isinstance(dist, FloatDistribution) and dist.step is not None
    )


class CifarOptunaSweeper(OptunaSweeperImpl):
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
        max_retry,
        per_layer=None,  # read from the config by cifar_sweep.spaces.per_layer
    ):
        super().__init__(
            None, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
            custom_search_space, params,
        )  # fmt: skip
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.heartbeat = {"heartbeat_s": heartbeat_s, "grace_s": grace_s, "max_retry": max_retry}

    def sweep(self, arguments: list[str]) -> None:
        try:
            self._sweep(arguments)
        except UserError as e:
            exit_with(e, log)

    # -- search space, sampler and study -------------------------------------------------

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
            return instantiate(self.sampler_cfg, _execution_whitelist_=TRUSTED), None
        if self.custom_search_space_extender or not all(map(_is_discrete, space.values())):
            raise UserError("sweeper=grid needs a search space of finite lists only")
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
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.config.get('name', 'study')}-{digest[:8]}"

    # -- the loop ------------------------------------------------------------------------

    def _sweep(self, arguments: list[str]) -> None:
        raw = OmegaConf.to_container(self.config.hydra.sweeper, resolve=False)
        refuse_literal_password(raw.get("storage"))
        if not self.storage:
            raise UserError("hydra.sweeper.storage is empty: a sweep needs a study storage")
        space, fixed, fixed_overrides, from_cli = self._space(arguments)
        sampler, grid_size = self._sampler(space, from_cli, arguments)
        n_trials = grid_size if grid_size else self.n_trials
        directions = self._get_directions()
        storage = self._storage = open_storage(self.storage, **self.heartbeat)
        study = optuna.create_study(
            study_name=self._study_name(space, fixed, fixed_overrides, directions, sampler),
            storage=storage,
            sampler=sampler,
            pruner=instantiate(self.pruner_cfg, _execution_whitelist_=TRUSTED),
            directions=directions,
            load_if_exists=True,
        )
        log.info(
            "study %s in %s: %s, %s, %d trials wanted, %d finished already",
            study.study_name, masked(self.storage), type(sampler).__name__,
            type(study.pruner).__name__, n_trials, len(study.get_trials(states=FINISHED)),
        )  # fmt: skip
        objective = self.config.objective  # names the values in later reports and plots
        study.set_user_attr(
            "objective", objective if isinstance(objective, str) else list(objective)
        )
        if study.trials:  # a rerun or a second worker: do not replay the seeded sequence
            sampler.reseed_rng()
        reseeded = bool(study.trials)
        budget = self.max_failure_rate * n_trials
        try:
            while True:
                optuna.storages.fail_stale_trials(study)  # killed workers' trials, retried
                n = self._states(study)
                finished, running = (
                    n[TrialState.COMPLETE] + n[TrialState.PRUNED],
                    n[TrialState.RUNNING],
                )
                if n[TrialState.FAIL] > budget:
                    raise UserError(
                        f"{n[TrialState.FAIL]} failed trials exceed "
                        f"max_failure_rate={self.max_failure_rate} x {n_trials}; see the log"
                    )
                if grid_size and sampler.is_exhausted(study):
                    break
                todo = min(self.n_jobs, n_trials - finished - running)
                if todo <= 0:
                    if running:
                        log.info("%d trials are running in other workers; stopping", running)
                    break
                trials = self._drop_surplus(study, [study.ask() for _ in range(todo)], n_trials)
                if trials and not reseeded and trials[0].number != 0:  # another worker was first
                    sampler.reseed_rng()
                reseeded = True
                if trials:
                    self._run_batch(study, trials, space, fixed, fixed_overrides, n_trials)
        finally:
            report.write(study, self.config.hydra.sweep.dir)

    def _run_batch(self, study, trials, space, fixed, fixed_overrides, n_trials) -> None:
        overrides = self._configure_trials(trials, space, fixed, fixed_overrides)
        overrides = [
            (*o, f"+trial.study={study.study_name}", f"+trial.id={t._trial_id}",
             f"+trial.number={t.number}")
            for o, t in zip(overrides, trials, strict=True)
        ]  # fmt: skip
        try:
            with self._heartbeat(study, trials):
                returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into sys.exit(1)
            for t in trials:  # keep the interrupted points: they run first next time
                study.enqueue_trial(t.params, skip_if_exists=False)
                t.set_user_attr("fail_reason", "interrupted")
                study.tell(t, state=TrialState.FAIL)
            raise
        for trial, ret in zip(trials, returns, strict=True):
            self._tell(study, trial, ret)
            self._progress(study, trial, n_trials)

    def _tell(self, study, trial, ret: JobReturn) -> None:
        """Record the job's outcome: COMPLETE, PRUNED, or FAIL with its reason."""
        try:
            self._tell_outcome(study, trial, ret)
        except RuntimeError as e:  # GridSampler calls study.stop() after the last grid point
            if "Study.stop" not in str(e):
                raise

    def _tell_outcome(self, study, trial, ret: JobReturn) -> None:
        if ret.status == JobStatus.COMPLETED:
            value = ret.return_value
            values = list(value) if isinstance(value, list | tuple) else [value]
            try:
                values = [float(v) for v in values]
                if all(map(math.isfinite, values)) and len(values) == len(study.directions):
                    study.tell(trial, values)
                    return
            except (TypeError, ValueError):
                pass
            reason = f"objective {value!r} is not {len(study.directions)} finite number(s)"
        elif isinstance(ret._return_value, optuna.TrialPruned):
            study.tell(trial, state=TrialState.PRUNED)
            return
        else:
            err = ret._return_value
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, reason)

    def _progress(self, study, trial, n_trials: int) -> None:
        """One line per trial: trial 7 (8/50)  complete  val/acc_best=0.83  best=0.86  pruned=3"""
        frozen = study._storage.get_trial(trial._trial_id)
        n = self._states(study)
        names = self.config.objective
        names = [names] if isinstance(names, str) else list(names)
        line = f"trial {trial.number} ({n[TrialState.COMPLETE] + n[TrialState.PRUNED]}/{n_trials})"
        line += f"  {frozen.state.name.lower()}"
        values = frozen.values or (
            [frozen.intermediate_values[frozen.last_step]] if frozen.last_step is not None else []
        )
        line += "".join(f"  {name}={v:.4g}" for name, v in zip(names, values, strict=False))
        if len(study.directions) == 1 and n[TrialState.COMPLETE]:
            line += f"  best={study.best_value:.4g}"
        line += f"  pruned={n[TrialState.PRUNED]}  failed={n[TrialState.FAIL]}"
        log.info(line)

    @staticmethod
    def _states(study) -> Counter:
        """How many trials of the study are in each state (all workers' trials); surplus trials
        are counted apart from failures."""
        return Counter(
            "surplus" if t.user_attrs.get("fail_reason") == SURPLUS else t.state
            for t in study.get_trials(deepcopy=False)
        )

    @staticmethod
    def _drop_surplus(study, trials: list, n_trials: int) -> list:
        """Trials that workers asked for at the same moment can overshoot n_trials: the one with
        the higher number (numbers are given out by the storage, atomically) steps back."""
        live = [t.number for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL]
        keep = []
        for t in trials:
            if sum(n < t.number for n in live) >= n_trials:
                t.set_user_attr("fail_reason", SURPLUS)
                study.tell(t, state=TrialState.FAIL)
            else:
                keep.append(t)
        return keep

    @contextmanager
    def _heartbeat(self, study, trials):
        """Beat for the launched trials while they run, so a killed sweep's trials go stale."""
        storage = self._storage
        if not isinstance(storage, RDBStorage):  # journal files keep no heartbeats here
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while True:
                for t in trials:
                    storage.record_heartbeat(t._trial_id)
                if stop.wait(self.heartbeat["heartbeat_s"]):
                    return

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
