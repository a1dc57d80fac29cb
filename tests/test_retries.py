"""Retries that keep their point: a retry slow to start is not failed for silence, a job beats
while it tests, a point whose worker keeps dying is retried max_retry times, two processes that
fail one orphan queue it once, and a failure no swept value changes stops the sweep."""

import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import study, sweep
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from cifar_sweep.errors import SharedCauseError, UserError
from cifar_sweep.sweep import contract, optuna_private, ownership, recovery
from cifar_sweep.sweep.contract import JOB_BEATS, OWNER, RETRIES, RETRY_OF, classify
from cifar_sweep.sweep.loop import WorkerLoop
from cifar_sweep.sweep.storage import open_storage

TINY_MODEL = ("model=tiny_cnn", "model.channels=[8]", "model.hidden=16")


def sqlite_study(tmp_path: Path, grace_s: int = 2) -> tuple[optuna.Study, str]:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = open_storage(url, heartbeat_s=1, grace_s=grace_s)
    return optuna.create_study(study_name="s", storage=storage, direction="maximize"), url


def dead_trial(s: optuna.Study, *, beating: bool = False) -> optuna.trial.Trial:
    """A trial asked and claimed by a worker that has died (its start ticks no longer match);
    with `beating`, its job had taken over the heartbeat."""
    trial = s.ask()
    trial.suggest_float("x", 0, 1)
    ownership.claim(s, trial, worker=0, device="cpu")
    owner = s.trials[trial.number].user_attrs[OWNER]
    optuna_private.set_user_attr(s, trial, OWNER, {**owner, "ticks": -1000})
    if beating:
        optuna_private.set_system_attr(s, trial, JOB_BEATS, True)
    return trial


def loop(s: optuna.Study, launch, *, n_trials: int, grace_s: int = 2, **kw) -> WorkerLoop:
    return WorkerLoop(
        study=s,
        n_trials=n_trials,
        n_jobs=1,
        grid=False,
        failure_budget=kw.pop("failure_budget", 0),
        launch=launch,
        overrides=lambda trials: [[f"x={t.suggest_float('x', 0, 1)}"] for t in trials],
        names=["val/acc_best"],
        heartbeat_s=1,
        grace_s=grace_s,
        max_retry=kw.pop("max_retry", 1),
        **kw,
    )


def completed(value: float = 0.5) -> JobReturn:
    return JobReturn(status=JobStatus.COMPLETED, _return_value=value)


@pytest.mark.slow  # waits out three grace periods; CI runs it
def test_a_retry_slower_to_start_than_grace_s_is_not_failed_for_silence(tmp_path: Path):
    """Its job takes three grace periods before its first step (a queue, a cold cache) while
    another process checks for silent trials all along: the sweep beats for it meanwhile."""
    s, url = sqlite_study(tmp_path, grace_s=2)
    dead_trial(s, beating=True)  # its job beat for itself before it died
    other = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_s=1, grace_s=2))
    stop = threading.Event()

    def checker() -> None:  # what any other worker of the study does each round
        while not stop.wait(0.3):
            recovery.recover(other, max_retry=1, grace_s=2)

    def slow_start(jobs, initial_job_idx):
        time.sleep(6)
        return [completed() for _ in jobs]

    thread = threading.Thread(target=checker, daemon=True)
    thread.start()
    try:
        loop(s, slow_start, n_trials=1).run()
    finally:
        stop.set()
        thread.join()
    first, retry = s.trials
    assert classify(first) == contract.WORKER_DIED and retry.user_attrs[RETRY_OF] == 0
    assert retry.state == TrialState.COMPLETE and JOB_BEATS not in retry.system_attrs


def test_a_job_beats_while_it_tests_and_predicts(tmp_path: Path, monkeypatch):
    from conftest import compose_cfg

    from cifar_sweep.sweep.heartbeat import Heartbeat
    from cifar_sweep.train import train

    s, _ = sqlite_study(tmp_path)
    trial = s.ask()
    beats, phases = [], []

    class Phases(Heartbeat):  # when testing starts, as the trainer's hooks see it
        def on_predict_start(self, trainer, module) -> None:
            phases.append(time.monotonic())

    beat = optuna_private.beat
    monkeypatch.setattr(
        optuna_private, "beat", lambda *a: (beats.append(time.monotonic()), beat(*a))
    )
    cfg = compose_cfg("model=tiny_cnn", "trainer.max_epochs=1", tmp_path=tmp_path)
    train(cfg, tmp_path / "run", [Phases(trial, every_s=0)], evaluate=True)
    assert phases and any(b > phases[0] for b in beats)  # beats after the evaluation began
    assert optuna_private.frozen(s, trial).system_attrs[JOB_BEATS]  # the job took over


def test_a_point_whose_worker_dies_every_time_is_retried_max_retry_times(tmp_path: Path):
    s, _ = sqlite_study(tmp_path)
    dead_trial(s)
    for _ in range(3):  # each rerun finds the last one dead, and its retry dies too
        recovery.recover(s, max_retry=1, grace_s=600)
        if s.get_trials(states=(TrialState.WAITING,)):
            dead_trial(s)  # asks the queued retry: the same point
    points = {round(t.params["x"], 12) for t in s.trials}
    assert len(points) == 1 and len(s.trials) == 2  # the first run and one retry
    assert [t.user_attrs.get(RETRIES, 0) for t in s.trials] == [0, 1]
    assert not s.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_two_processes_failing_one_orphan_at_once_queue_it_once(tmp_path: Path):
    """SQLite has no row locks: both may see their update win. The retry is queued once."""
    s, url = sqlite_study(tmp_path)
    for _ in range(5):
        orphan = dead_trial(s)
        frozen = optuna_private.frozen(s, orphan)
        optuna_private.set_state(s, orphan, TrialState.FAIL)
        studies = [
            optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_s=1, grace_s=2))
            for _ in range(2)
        ]
        barrier = threading.Barrier(2)

        def queue(study: optuna.Study, barrier=barrier, frozen=frozen) -> None:
            barrier.wait()
            recovery.requeue(study, frozen, max_retry=1)

        threads = [threading.Thread(target=queue, args=(x,)) for x in studies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        retries = [t for t in s.trials if t.user_attrs.get(RETRY_OF) == orphan.number]
        live = [t for t in retries if t.state == TrialState.WAITING]
        assert len(live) == 1, [(t.number, t.state) for t in retries]
        recovery.take(s, live[0])  # out of the way of the next round
        optuna_private.set_state(s, live[0], TrialState.FAIL)


def test_a_failure_no_swept_value_changes_stops_the_sweep_and_keeps_its_point(tmp_path: Path):
    s, _ = sqlite_study(tmp_path)
    full = SharedCauseError("/run: no space left on the device (0 MB free)")
    launched = []

    def launch(jobs, initial_job_idx):
        launched.extend(jobs)
        return [JobReturn(status=JobStatus.FAILED, _return_value=full) for _ in jobs]

    with pytest.raises(UserError, match=r"trial 0: /run: no space left .* the sweep stops"):
        loop(s, launch, n_trials=3, failure_budget=3).run()
    assert len(launched) == 1  # not one trial after another
    first, queued = s.trials
    assert (
        queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == first.params
    )


def test_a_sweep_job_on_sqlite_beats_for_itself(tmp_path: Path):
    sweep(tmp_path, *TINY_MODEL, "hydra.sweeper.n_trials=1", "sweeper=random")
    [trial] = study(tmp_path).trials
    assert trial.state == TrialState.COMPLETE and trial.system_attrs[JOB_BEATS] is True


def test_devices_auto_on_a_node_of_four_gpus_is_counted_before_the_worker_devices(
    tmp_path, monkeypatch
):
    """trainer.devices=auto in a sweep means each trial takes every visible GPU: counted as 4
    here before hydra.sweeper.devices is cut into groups, never left for Lightning to expand
    inside a trial (where a worker's pinned devices would count otherwise)."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    gpus = ("trainer.devices=auto", "trainer.accelerator=auto", "hydra.sweeper.devices=[0,1]")
    result = sweep(tmp_path, *TINY_MODEL, *gpus, ok=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: hydra.sweeper.devices=[0, 1]: 2 GPU(s) do not make groups")
    assert "trainer.devices=4" in line
    assert not (tmp_path / "studies.db").exists()


def test_a_sweep_with_devices_auto_on_the_cpu_runs_one_device_per_trial(tmp_path: Path):
    cpu = ("trainer.devices=auto", "trainer.accelerator=cpu", "hydra.sweeper.n_trials=1")
    sweep(tmp_path, *TINY_MODEL, *cpu, "sweeper=random")
    assert study(tmp_path).trials[0].state == TrialState.COMPLETE


def test_a_trial_stopped_before_it_suggested_its_given_point_is_retried_with_that_point():
    """A start-up point is given to a trial when it is asked (start_up.py) and suggested a moment
    later: a kill in between leaves no params, and the retry still runs that point."""
    s = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    given = s.ask()
    optuna_private.fix_params(s, given, {"x": 0.25})
    assert s.trials[0].params == {}
    assert recovery.requeue(s, s.trials[0], max_retry=1)
    assert s.ask().suggest_float("x", 0, 1) == 0.25
