"""The worker loop: ask the study for trials, run them through the launcher, tell the outcome."""

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from cifar_sweep.errors import UserError
from cifar_sweep.sweep import recovery
from cifar_sweep.sweep.contract import FAIL_REASON, WARM_START, fail, trial_overrides

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS = "not run: the study already had n_trials (another worker asked at the same moment)"
INTERRUPTED = "interrupted"
# failures that are not the trial's fault, so not charged to the failure budget
NOT_CHARGED = {SURPLUS: "surplus", INTERRUPTED: "interrupted", recovery.DIED: "died"}


class WorkerLoop:
    """One sweep process's share of a study: batches of `n_jobs` trials until the study holds
    `n_trials` finished trials (counting every worker's), or the failure budget is spent."""

    def __init__(
        self,
        *,
        study: optuna.Study,
        n_trials: int,
        n_jobs: int,
        grid: bool,
        failure_budget: float,
        launch: Callable,
        overrides: Callable,
        names: list[str],
        heartbeat_s: int,
        max_retry: int,
        worker: int = 0,
        device: str = "auto",
        label: str = "",
    ):
        self.study, self.n_trials, self.n_jobs, self.grid = study, n_trials, n_jobs, grid
        self.failure_budget, self.names, self.heartbeat_s = failure_budget, names, heartbeat_s
        self.launch = launch  # the Hydra launcher's launch(overrides, initial_job_idx)
        self.overrides = overrides  # trials -> each trial's job overrides (suggests its params)
        self.max_retry, self.worker, self.device = max_retry, worker, device
        self.label = label  # "worker 2: " before each progress line, when there are workers

    def run(self) -> None:
        study = self.study
        reseeded = bool(study.trials)
        if reseeded:  # a rerun or a second worker: do not replay the seeded sequence
            study.sampler.reseed_rng()
        while True:
            if recovery.recover(study, max_retry=self.max_retry):  # this host's dead workers
                log.info("%strials of dead workers failed and queued again", self.label)
            optuna.storages.fail_stale_trials(study)  # other hosts' killed workers, retried
            n = states(study)
            finished, running = n[TrialState.COMPLETE] + n[TrialState.PRUNED], n[TrialState.RUNNING]
            if n[TrialState.FAIL] > self.failure_budget:
                raise UserError(
                    f"{n[TrialState.FAIL]} failed trials exceed max_failure_rate x n_trials = "
                    f"{self.failure_budget:g}; see the log"
                )
            if self.grid and study.sampler.is_exhausted(study):
                return
            todo = min(self.n_jobs, self.n_trials - finished - running)
            if todo <= 0:
                if running:
                    elsewhere = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    log.info(
                        "%s%d trials are running in other workers (%s); stopping",
                        self.label,
                        running,
                        recovery.where(elsewhere),
                    )
                return
            trials = [study.ask() for _ in range(todo)]
            for t in trials:
                recovery.claim(t, worker=self.worker, device=self.device)
            trials = drop_surplus(study, trials, self.n_trials)
            if trials and not reseeded and trials[0].number != 0:  # another worker was first
                study.sampler.reseed_rng()
            reseeded = True
            if trials:
                self._run_batch(trials)

    def _run_batch(self, trials: list) -> None:
        name = self.study.study_name
        jobs = [
            [*o, *trial_overrides(name, t)]
            for o, t in zip(self.overrides(trials), trials, strict=True)
        ]
        try:
            with self._heartbeat(trials):
                returns = self.launch(jobs, initial_job_idx=trials[0].number)
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into sys.exit(1)
            for t in trials:  # keep the interrupted points: they run first next time
                self.study.enqueue_trial(t.params, skip_if_exists=False)
                fail(self.study, t, INTERRUPTED)
            raise
        for trial, ret in zip(trials, returns, strict=True):
            tell(self.study, trial, ret)
            self._progress(trial)

    def _progress(self, trial) -> None:
        """One line per trial: trial 7 (8/50)  complete  val/acc_best=0.83  best=0.86  pruned=3"""
        study = self.study
        frozen = study._storage.get_trial(trial._trial_id)
        n = states(study)
        line = f"{self.label}trial {trial.number} ({n[TrialState.COMPLETE] + n[TrialState.PRUNED]}/"
        line += f"{self.n_trials})  {frozen.state.name.lower()}"
        values = frozen.values or (
            [frozen.intermediate_values[frozen.last_step]] if frozen.last_step is not None else []
        )
        line += "".join(f"  {k}={v:.4g}" for k, v in zip(self.names, values, strict=False))
        if len(study.directions) == 1 and n[TrialState.COMPLETE]:
            line += f"  best={study.best_value:.4g}"
        line += f"  pruned={n[TrialState.PRUNED]}  failed={n[TrialState.FAIL]}"
        log.info(line)

    @contextmanager
    def _heartbeat(self, trials: list):
        """Beat for the launched trials while they run, so a killed sweep's trials go stale."""
        storage = self.study._storage  # Optuna wraps an RDBStorage in a cache: ask it, not its type
        if getattr(storage, "get_heartbeat_interval", lambda: None)() is None:  # journal files
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while True:
                for t in trials:
                    storage.record_heartbeat(t._trial_id)
                if stop.wait(self.heartbeat_s):
                    return

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def tell(study: optuna.Study, trial, ret: JobReturn) -> None:
    """Record the job's outcome: COMPLETE, PRUNED, or FAIL with its reason."""
    try:
        _tell_outcome(study, trial, ret)
    except RuntimeError as e:  # GridSampler calls study.stop() after the last grid point
        if "Study.stop" not in str(e):
            raise


def _tell_outcome(study: optuna.Study, trial, ret: JobReturn) -> None:
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
        reason = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        reason = reason.splitlines()[0][:500]
    fail(study, trial, reason)
    log.warning("trial %d failed: %s", trial.number, reason)


def states(study: optuna.Study) -> Counter:
    """How many of the study's trials (all workers') are in each state. Trials copied by a warm
    start are counted apart from finished ones, and failures that are not the trial's fault
    (surplus, interrupted, worker died) apart from failures."""

    def kind(t: optuna.trial.FrozenTrial):
        if WARM_START in t.user_attrs:
            return "imported"
        return NOT_CHARGED.get(t.user_attrs.get(FAIL_REASON), t.state)

    return Counter(map(kind, study.get_trials(deepcopy=False)))


def drop_surplus(study: optuna.Study, trials: Sequence, n_trials: int) -> list:
    """Trials that workers asked for at the same moment can overshoot n_trials: the one with the
    higher number (numbers are given out by the storage, atomically) steps back."""
    live = [
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.state != TrialState.FAIL and WARM_START not in t.user_attrs  # as states() counts
    ]
    keep = []
    for t in trials:
        if sum(n < t.number for n in live) >= n_trials:
            fail(study, t, SURPLUS)
        else:
            keep.append(t)
    return keep
