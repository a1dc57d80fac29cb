"""The worker loop: ask the study for trials, run them through the launcher, tell the outcome.

A trial is claimed the moment it is asked (ownership.claim), and the loop's process is
registered on the study while it runs, so a kill between the two is recovered at once. SIGTERM
(scancel, a pre-empted node) between trials ends the loop before it asks for another; during a
trial it ends the trial as interrupted, queued to run first next time, as Ctrl-C does. Either
signal stops the loop before its next trial even when Python loses the exception (raised inside
a garbage-collector hook).
"""

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from cifar_sweep.errors import UserError
from cifar_sweep.sweep import asha, outcome, ownership, pbt_schedule, recovery, start_up
from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.asha import ASHAPruner
from cifar_sweep.sweep.contract import (
    CHARGED,
    FAIL_REASON,
    FINISHED,
    IMPORTED,
    INTERRUPTED,
    JOB_BEATS,
    LIVE,
    NOT_RUN,
    PBT_MEMBER,
    RESUME,
    RUN_DIR,
    RUNNING,
    SHARED,
    WAITING,
    WORKER_DIED,
    classify,
    fail,
    job_batches,
    job_dir,
    point_of,
    source,
    states,
    trial_overrides,
)
from cifar_sweep.sweep.pbt import PBTPruner

log = logging.getLogger(__name__)
STOPS = (signal.SIGINT, signal.SIGTERM)
SURPLUS = "not run: the study already had n_trials (another worker asked at the same moment)"


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
        grace_s: int,
        max_retry: int,
        worker: int = 0,
        device: str = "auto",
        label: str = "",
        sweep_dir: str | None = None,
        runs=None,
    ):
        self.study, self.n_trials, self.n_jobs, self.grid = study, n_trials, n_jobs, grid
        self.failure_budget, self.names, self.heartbeat_s = failure_budget, names, heartbeat_s
        self.launch = launch  # the Hydra launcher's launch(overrides, initial_job_idx)
        self.overrides = overrides  # trials -> each trial's job overrides (suggests its params)
        self.grace_s, self.max_retry, self.worker, self.device = grace_s, max_retry, worker, device
        self.label = label  # "worker 2: " before each progress line, when there are workers
        self.sweep_dir = sweep_dir  # job folders are recorded on their trials (for resuming)
        self.runs = runs  # the study's MLflow runs (trackers.mlflow_study), when logged there
        self.terminated = self.in_trial = False
        self.signal: int | None = None  # the stop signal received, if any

    def run(self) -> None:
        """The loop, with SIGTERM handled as the module says (in the main thread only), while
        this process is registered as one of the study's workers."""
        key = ownership.register(self.study, worker=self.worker, device=self.device)
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOPS} if main else {}
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            ownership.unregister(self.study, key)

    def _on_signal(self, signum: int, frame) -> None:
        self.terminated = True  # even if the exception below is lost (raised inside a GC hook)
        self.signal = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.in_trial:  # during fit Lightning raises its own SystemExit; this covers the rest
            raise SystemExit(128 + signum)

    def _loop(self) -> None:
        study = self.study
        sequence = start_up.StartUp(study, self.overrides, self.n_trials)  # before any reseed
        reseeded = any(map(_ran, study.get_trials(deepcopy=False)))
        if reseeded:  # a rerun or a second worker: do not replay the seeded sequence
            study.sampler.reseed_rng()
        elif sequence.length:  # the start-up points are the sequence's: draw on after them
            study.sampler = sequence.drawn()
        while not self.terminated:
            if recovery.recover(study, max_retry=self.max_retry, grace_s=self.grace_s):
                log.info("%strials of dead or silent workers failed and queued again", self.label)
            n = states(study)
            finished, running = sum(n[k] for k in FINISHED), n[RUNNING]
            failed = sum(n[k] for k in CHARGED)
            if failed > self.failure_budget:
                raise UserError(
                    f"{failed} failed trials exceed max_failure_rate x n_trials = "
                    f"{self.failure_budget:g}; {outcome.shared_cause(study)}"
                )
            if self.grid and study.sampler.is_exhausted(study) and not n[WAITING]:
                return  # a failed point counts as visited: its queued retry still runs
            todo = min(self.n_jobs, self.n_trials - finished - running)
            if isinstance(study.pruner, ASHAPruner) and study.pruner.promote:
                todo = asha.to_ask(study, n_jobs=self.n_jobs, n_trials=self.n_trials)
            if isinstance(study.pruner, PBTPruner):  # its intervals, queued
                todo = pbt_schedule.to_ask(study, n_jobs=self.n_jobs, max_retry=self.max_retry)
            if todo <= 0:
                if running:
                    elsewhere = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    log.info(
                        "%s%d trials are running in other workers (%s); stopping",
                        self.label,
                        running,
                        ownership.where(elsewhere),
                    )
                return
            trials = []
            try:  # Ctrl-C before a trial is launched: it is interrupted as a running one is
                for _ in range(todo):  # each claimed at once (a kill in between: orphans)
                    trials.append(study.ask())
                    ownership.claim(study, trials[-1], worker=self.worker, device=self.device)
                    sequence.take(trials[-1])
                if (
                    trials
                    and not reseeded
                    and any(
                        _ran(t) and t.number < trials[0].number
                        for t in study.get_trials(deepcopy=False)
                    )
                ):  # another worker was first
                    study.sampler.reseed_rng()
                reseeded = True
                trials = drop_surplus(study, trials, self.n_trials)
                for batch in job_batches(trials):
                    self._run_batch(batch)
            except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM: launched or not
                self._interrupt(trials)  # those not ended already
                raise
        log.info("%sstopped by a signal: stopping before the next trial", self.label)

    def _run_batch(self, trials: list) -> None:
        name = self.study.study_name
        for t in trials:
            self._prepare(t)
        jobs = [
            [*o, *trial_overrides(name, t)]
            for o, t in zip(self.overrides(trials), trials, strict=True)
        ]
        for t in trials if self.runs is not None else []:  # after overrides: params drawn
            self.runs.start(t)
        try:
            self.in_trial = True
            with self._heartbeat(trials):
                # the job-folder rule (contract.job_batches): folders are trial numbers
                returns = self.launch(jobs, initial_job_idx=trials[0].number)
        except SystemExit:  # SIGTERM, or Ctrl-C that Lightning turned into sys.exit(1); the
            if self.signal == signal.SIGINT:  # caller interrupts the trials
                raise KeyboardInterrupt from None
            raise
        finally:
            self.in_trial = False
        for trial, ret in zip(trials, returns, strict=True):
            outcome.tell(self.study, trial, ret)
            self._ended(trial)
            frozen = private.frozen(self.study, trial)
            if classify(frozen) == WORKER_DIED:  # a rank of its own processes died (ranks.py)
                recovery.requeue(self.study, frozen, max_retry=self.max_retry)
            if classify(frozen) == SHARED:  # the disk, not the point: its point runs next time
                recovery.requeue(self.study, frozen, max_retry=None)
                raise UserError(
                    f"trial {trial.number}: {frozen.user_attrs[FAIL_REASON]} (no swept value "
                    "changes this, so the sweep stops; its point runs first when you rerun)"
                )
            if outcome.data_error(frozen):  # every other trial would fail the same way: stop now
                raise UserError(
                    f"trial {trial.number} failed on its data, which no swept parameter "
                    f"changes: {frozen.user_attrs[FAIL_REASON]}"
                )

    def _interrupt(self, trials: list) -> None:
        """Keep the interrupted points: they run first next time. A trial that has ended (or
        was ended by another process, which queued it) is left as it is."""
        for t in trials:
            frozen = private.frozen(self.study, t)
            try:  # failed first: a trial another process ended already is queued by it
                fail(self.study, t, INTERRUPTED, "interrupted: its point runs first next time")
            except (UpdateFinishedTrialError, ValueError):
                continue
            recovery.requeue(self.study, frozen, max_retry=None)
            self._ended(t)

    def _prepare(self, trial) -> None:
        """Record the trial's job folder; a retry, promotion or PBT interval that goes on from an
        earlier run's last epoch gets that run's reported values, so the pruner sees the whole
        curve."""
        if self.sweep_dir is not None:
            folder = str(job_dir(self.sweep_dir, trial.number))
            private.set_user_attr(self.study, trial, RUN_DIR, folder)
        number = source(trial)  # a retry's, a promotion's or a PBT interval's
        if trial.user_attrs.get(RESUME) and number is not None:
            earlier = self.study.get_trials(deepcopy=False)[number]
            for step, value in sorted(earlier.intermediate_values.items()):
                private.set_intermediate(self.study, trial, step, value)

    def _ended(self, trial) -> None:
        """A trial has ended: its progress line, and its run's end when it is tracked."""
        self._progress(trial)
        if self.runs is not None:
            self.runs.end(private.frozen(self.study, trial))

    def _progress(self, trial) -> None:
        failed, line = outcome.progress_line(
            self.study, trial, label=self.label, n_trials=self.n_trials, names=self.names
        )
        log.log(logging.WARNING if failed else logging.INFO, line)

    @contextmanager
    def _heartbeat(self, trials: list):
        """Beat for the launched trials until each job beats for itself (heartbeat.py), so the
        trials of a killed sweep go stale, and those of a hung job too."""
        study = self.study
        if not private.has_heartbeats(study):  # journal files
            yield
            return
        stop, mine = threading.Event(), {private.trial_id(t) for t in trials}

        def beat() -> None:
            while mine:
                try:
                    for trial_id in list(mine):
                        if private.frozen(study, trial_id).system_attrs.get(JOB_BEATS):
                            mine.discard(trial_id)  # its job beats while it makes progress
                        else:
                            private.beat(study, trial_id)
                except UserError:  # the database is gone: the job and the loop say so
                    return
                if stop.wait(self.heartbeat_s):
                    return

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _ran(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial was run (or is running) by a worker, not queued or copied in."""
    return classify(t) not in (IMPORTED, WAITING)


def drop_surplus(study: optuna.Study, trials: Sequence, n_trials: int) -> list:
    """Trials that workers asked for at the same moment can overshoot n_trials: the one with the
    higher number (numbers are given out by the storage, atomically) steps back. A segment of a
    point the study holds already (an ASHA promotion) is never surplus; under PBT, a trial is
    surplus when it is none of the intervals PBT queued."""
    live = [t for t in study.get_trials(deepcopy=False) if classify(t) in LIVE]
    pbt = isinstance(study.pruner, PBTPruner)
    keep = []
    for t in trials:
        before = {point_of(x) for x in live if x.number < t.number}
        frozen = private.frozen(study, t)
        if pbt and PBT_MEMBER not in frozen.user_attrs:
            fail(study, t, NOT_RUN, pbt_schedule.STRAY)  # PBT runs only the intervals it queued
        elif pbt and (first := pbt_schedule.runs_it_already(study, frozen)) is not None:
            fail(study, t, NOT_RUN, f"not run: trial {first} runs its PBT interval")
        elif point_of(frozen) not in before and len(before) >= n_trials:
            fail(study, t, NOT_RUN, SURPLUS)
        else:
            keep.append(t)
    return keep
