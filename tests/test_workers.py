"""Several workers on one study: asynchronous worker processes, recovery after a crash, Ctrl-C,
and workers asking for the last trial at the same moment."""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import (
    ROOT,
    default_sigint,
    distinct_params,
    states,
    study,
    sweep,
    sweep_cmd,
    wait_for,
)
from optuna.trial import TrialState

from cifar_sweep.sweep import contract, optuna_private, ownership
from cifar_sweep.sweep.contract import FAIL_KIND, FAIL_REASON, OWNER, RETRY_OF

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.slow  # real processes, tens of seconds; make test-slow and CI run it
def test_two_workers_pinned_to_two_devices_run_the_study_asynchronously(tmp_path: Path):
    result = sweep(
        tmp_path,
        "hydra.sweeper.workers=2",
        "hydra.sweeper.devices=[0,1]",
        "hydra.sweeper.n_trials=4",
        "trainer.max_epochs=3",
        "sweeper=random",
    )
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 4} and distinct_params(s.trials) == 4
    by_worker = {w: [t for t in s.trials if t.user_attrs[OWNER]["worker"] == w] for w in (0, 1)}
    assert all(by_worker.values()), "both workers ran trials"
    for w, trials in by_worker.items():  # each worker kept its device; pid and host recorded
        owners = [t.user_attrs[OWNER] for t in trials]
        assert {o["device"] for o in owners} == {str(w)}
        assert len({o["pid"] for o in owners}) == 1 and owners[0]["host"]
    a, b = by_worker[0][0], by_worker[1][0]  # the workers' first trials ran at the same time
    assert a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
    assert "worker 1: trial" in result.stdout + result.stderr  # the progress line names it
    # its timeline's one row per worker: test_report.py, on a study made there
    assert result.stdout.count("best params") == 1  # one report, by the launching process


@pytest.mark.slow  # real workers; Ctrl-C in one sweep: test_sweep_messages
def test_ctrl_c_stops_every_worker_and_queues_their_trials_first(tmp_path: Path):
    args = (
        "hydra.sweeper.workers=2",
        "hydra.sweeper.devices=[cpu]",
        "hydra.sweeper.n_trials=4",
        "trainer.max_epochs=6",
        "sweeper=random",
    )
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            sweep_cmd(tmp_path, *args),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=default_sigint,
            start_new_session=True,
        )
    wait_for(tmp_path, done=0, running=2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal does: every process of the command
    assert proc.wait(timeout=180) != 0
    s = study(tmp_path)
    stopped = [t for t in s.trials if t.state == TrialState.FAIL]
    assert len(stopped) == 2, log.read_text()[-4000:]
    assert {t.user_attrs[FAIL_KIND] for t in stopped} == {"interrupted"}
    queued = [t for t in s.trials if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["fixed_params"]["optimizer.lr"] for t in queued) == sorted(
        t.params["optimizer.lr"] for t in stopped
    )
    sweep(tmp_path, *args, "hydra.sweeper.workers=1")  # the rerun: one process is enough
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 4, "FAIL": 2}  # interrupted trials spend no failure budget
    for t in queued:  # the queued points ran first, with the same parameters
        assert s.trials[t.number].state == TrialState.COMPLETE


def test_failed_trials_keep_their_reason_until_the_failure_budget_stops_the_loop():
    """The loop's plumbing with a launcher that runs nothing: a job that raised, or returned a
    NaN, is FAIL with a one-line reason and the loop goes on; one failure past the budget stops
    it with a message naming max_failure_rate."""
    from hydra.core.utils import JobReturn, JobStatus

    from cifar_sweep.errors import UserError
    from cifar_sweep.sweep.contract import FAIL_REASON
    from cifar_sweep.sweep.loop import WorkerLoop

    outcomes = iter(  # trial by trial: what its job gives back
        [
            JobReturn(status=JobStatus.FAILED, _return_value=UserError("model.norm='bogus'\n…")),
            JobReturn(status=JobStatus.COMPLETED, _return_value=0.5),
            JobReturn(status=JobStatus.COMPLETED, _return_value=float("nan")),
        ]
    )
    s = optuna.create_study(direction="maximize")
    loop = WorkerLoop(
        study=s,
        n_trials=5,
        n_jobs=1,
        grid=False,
        failure_budget=1,
        launch=lambda jobs, initial_job_idx: [next(outcomes) for _ in jobs],
        overrides=lambda trials: [[f"x={t.suggest_float('x', 0, 1)}"] for t in trials],
        names=["val/acc_best"],
        heartbeat_s=60,
        grace_s=180,
        max_retry=1,
    )
    with pytest.raises(UserError, match=r"2 failed trials exceed max_failure_rate x n_trials = 1"):
        loop.run()
    assert [t.state for t in s.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    reasons = [s.trials[i].user_attrs[FAIL_REASON] for i in (0, 2)]
    assert reasons == ["model.norm='bogus'", "objective nan is not 1 finite number(s)"]
    assert s.best_value == 0.5


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    """The sweep in the background, in a process group of its own (kill -9 takes its job too)."""
    return subprocess.Popen(
        sweep_cmd(tmp_path, *args),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # real workers killed, about 10 s: CI runs it
def test_a_rerun_right_after_kill_9_finishes_the_study_without_waiting(tmp_path: Path):
    args = ("hydra.sweeper.n_trials=4", "trainer.max_epochs=3", "sweeper=random")
    proc = start(tmp_path, *args)
    wait_for(tmp_path, done=1)
    time.sleep(1.0)
    kill_9(proc)
    before = study(tmp_path)
    done = {t.number: t.params for t in before.trials if t.state == TrialState.COMPLETE}
    [killed] = [t for t in before.trials if t.state == TrialState.RUNNING]
    started = time.time()
    result = sweep(tmp_path, *args)  # at once: grace_s is 180 s
    assert "running in other workers" not in result.stdout + result.stderr
    s = study(tmp_path)
    assert len([t for t in s.trials if t.state in FINISHED]) == 4
    assert all(s.trials[n].state == TrialState.COMPLETE for n in done)  # nothing lost
    assert s.trials[killed.number].user_attrs[FAIL_KIND] == "worker_died"
    [retried] = [t for t in s.trials if t.user_attrs.get(RETRY_OF) == killed.number]
    # its point: the values it had, or, killed before it suggested them, the start-up point given
    point = {**killed.system_attrs.get("fixed_params", {}), **killed.params}
    assert point and retried.params == point and retried.state == TrialState.COMPLETE
    assert time.time() - started < 120
    folders = {int(p.name) for p in (tmp_path / "sweep").glob("[0-9]*")}
    assert {t.number for t in s.trials if t.state in FINISHED} <= folders  # none overwritten


@pytest.mark.parametrize("done_before", [1, 2])
def test_a_grid_point_whose_worker_died_runs_again_and_the_grid_ends_complete(done_before: int):
    """A grid sweep run again after a crash: the point the dead worker held runs again from the
    queue (Optuna's grid reads its grid_id when told), also when it was the last point left."""
    from hydra.core.utils import JobReturn, JobStatus

    from cifar_sweep.sweep import ownership
    from cifar_sweep.sweep.loop import WorkerLoop

    grid = [0.001, 0.01, 0.1]
    s = optuna.create_study(sampler=optuna.samplers.GridSampler({"lr": grid}, seed=0))
    for _ in range(done_before):
        t = s.ask()
        s.tell(t, t.suggest_float("lr", 1e-4, 1))
    crashed = s.ask()
    crashed.suggest_float("lr", 1e-4, 1)
    ownership.claim(s, crashed, worker=0, device="cpu")
    owner = s.trials[crashed.number].user_attrs[OWNER]
    s._storage.set_trial_user_attr(crashed._trial_id, OWNER, {**owner, "ticks": -1000})  # gone
    launched = []

    def launch(jobs, initial_job_idx):
        launched.extend(jobs)
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=0.5) for _ in jobs]

    WorkerLoop(
        study=s,
        n_trials=len(grid),
        n_jobs=1,
        grid=True,
        failure_budget=0,
        max_retry=1,
        launch=launch,
        overrides=lambda trials: [[f"lr={t.suggest_float('lr', 1e-4, 1)}"] for t in trials],
        names=["val/acc_best"],
        heartbeat_s=60,
        grace_s=180,
    ).run()
    complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["lr"] for t in complete) == grid  # each point once, none lost
    [retried] = [t for t in s.trials if t.user_attrs.get(RETRY_OF) == crashed.number]
    assert retried.state == TrialState.COMPLETE and retried.params == crashed.params
    assert len(launched) == len(grid) - done_before


@pytest.mark.slow
def test_kills_at_random_moments_never_lose_or_add_a_trial(tmp_path: Path):
    """Start-up, mid-trial, between trials: whenever kill -9 lands, the next run goes on."""
    args = ("hydra.sweeper.n_trials=6", "trainer.max_epochs=2", "sweeper=random")
    rng = random.Random(0)
    kept: dict[int, dict] = {}
    for _ in range(5):
        proc = start(tmp_path, *args)
        time.sleep(rng.uniform(0.5, 8.0))
        kill_9(proc)  # and the next round reruns at once
        try:
            s = study(tmp_path)
        except ValueError:  # killed before the study was created
            continue
        for n, params in kept.items():  # finished trials stay finished
            assert s.trials[n].state == TrialState.COMPLETE and s.trials[n].params == params
        kept |= {t.number: t.params for t in s.trials if t.state == TrialState.COMPLETE}
    sweep(tmp_path, *args)
    s = study(tmp_path)
    assert len([t for t in s.trials if t.state in FINISHED]) == 6
    assert not [t for t in s.trials if t.state == TrialState.RUNNING]
    kinds = {t.user_attrs.get(FAIL_KIND) for t in s.trials if t.state == TrialState.FAIL}
    assert kinds <= {"worker_died"}, kinds


@pytest.mark.slow  # the Ctrl-C and kill -9 tests above run two workers on one study by default
def test_two_commands_on_one_study_share_it(tmp_path: Path):
    """The same command typed twice (another GPU, another node): one study, n_trials in all."""
    cmd = sweep_cmd(tmp_path, "hydra.sweeper.n_trials=5", "sweeper=random")
    procs = [
        subprocess.Popen(
            [*cmd, f"hydra.sweep.dir={tmp_path / f'sweep{i}'}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    s = study(tmp_path)
    complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5
    # a trial asked by both at the same moment steps back before it runs (forced below)
    assert all(t.user_attrs[FAIL_KIND] == "not_run" for t in s.trials if t not in complete)
    assert distinct_params(complete) == 5  # the second does not replay the seeded trials
    assert all("trial " in out for out in outputs)  # both ran trials


def test_a_trial_asked_past_n_trials_steps_back_without_counting_as_a_failure():
    from cifar_sweep.sweep.loop import SURPLUS, drop_surplus
    from cifar_sweep.sweep.loop import states as loop_states

    s = optuna.create_study()
    for _ in range(4):
        s.tell(s.ask(), 1.0)
    first, second = s.ask(), s.ask()  # two workers asked at the same moment for the 5th trial
    kept = drop_surplus(s, [first, second], n_trials=5)
    assert kept == [first]
    assert s.trials[second.number].state == TrialState.FAIL
    assert s.trials[second.number].user_attrs[FAIL_REASON] == SURPLUS
    assert loop_states(s)["error"] == 0  # not charged to the budget


def test_a_worker_whose_trial_overshoots_n_trials_runs_nothing_and_stops():
    """Force the race: another worker asks for the last trial between this worker's count and
    its own ask; this worker's trial (the higher number) steps back and is never launched."""
    from cifar_sweep.sweep.loop import SURPLUS, WorkerLoop

    s = optuna.create_study(direction="maximize")
    for _ in range(4):
        s.tell(s.ask(), 0.5)
    create = s._storage.create_new_trial
    others = []

    def another_worker_asks_first(study_id, template_trial=None):
        if not others:
            others.append(create(study_id))  # left RUNNING in the other worker
        return create(study_id, template_trial)

    s._storage.create_new_trial = another_worker_asks_first
    other = ownership.this_process(worker=1, device="cpu", trial=None)  # alive: our parent
    parent = os.getppid()
    other.update(pid=parent, ticks=ownership._stat(parent)[1])
    optuna_private.set_study_system_attr(s, f"{contract.WORKER}other", other)
    launched = []
    loop = WorkerLoop(
        study=s,
        n_trials=5,
        n_jobs=1,
        grid=False,
        failure_budget=1,
        max_retry=1,
        launch=lambda jobs, initial_job_idx: launched.append(jobs),
        overrides=lambda trials: [[f"x={t.suggest_float('x', 0, 1)}"] for t in trials],
        names=["val/acc_best"],
        heartbeat_s=60,
        grace_s=180,
    )
    loop.run()
    assert launched == []
    assert [t.state for t in s.trials[4:]] == [TrialState.RUNNING, TrialState.FAIL]
    assert s.trials[5].user_attrs[FAIL_REASON] == SURPLUS


def test_worker_devices_come_in_groups_of_trainer_devices(monkeypatch):
    """[0,1,2,3] with trainer.devices=2 is two workers of two, explicit groups are kept, and a
    worker given a group sees exactly those GPUs, counted among the ones it was given."""
    from cifar_sweep.errors import UserError
    from cifar_sweep.sweep.workers import groups, pin

    assert groups([0, 1, 2, 3], per_trial=2, accelerator="gpu") == ["0,1", "2,3"]
    assert groups([[0, 2], [1, 3]], per_trial=2, accelerator="gpu") == ["0,2", "1,3"]
    assert groups([0, 1], per_trial=1, accelerator="gpu") == ["0", "1"]  # as before groups
    assert groups("auto", per_trial=2, accelerator="cpu") == ["cpu"]
    with pytest.raises(UserError, match=r"3 GPU\(s\) do not make groups of trainer.devices=2"):
        groups([0, 1, 2], per_trial=2, accelerator="gpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert pin([[2, 3]], per_trial=2, accelerator="gpu") == "2,3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6,7"


def test_workers_and_reruns_train_the_start_up_points_one_worker_trains():
    """A seeded study's random start-up points are the seed's, however the trials were shared:
    one worker alone, or a first worker, a second that joined after it (it reseeds) and a rerun
    after a crash give the same first points, with a define-by-run space and none repeated."""
    from hydra.core.utils import JobReturn, JobStatus

    from cifar_sweep.sweep.loop import WorkerLoop

    def suggest(trials):
        for t in trials:  # per-layer values, as the NAS space suggests them
            for i in range(t.suggest_int("layers", 1, 3)):
                t.suggest_categorical(f"width.{i}", [16, 32, 64])
            t.suggest_float("lr", 1e-4, 1e-1, log=True)
        return [[f"lr={t.params['lr']}"] for t in trials]

    def run(storage, n_trials: int) -> None:  # one process: its own sampler from the config
        sampler = optuna.samplers.TPESampler(
            seed=3, n_startup_trials=5, multivariate=True, constant_liar=True
        )
        s = optuna.create_study(
            study_name="s",
            storage=storage,
            sampler=sampler,
            direction="maximize",
            load_if_exists=True,
        )
        WorkerLoop(
            study=s,
            n_trials=n_trials,
            n_jobs=1,
            grid=False,
            failure_budget=0,
            max_retry=1,
            launch=lambda jobs, initial_job_idx: [
                JobReturn(status=JobStatus.COMPLETED, _return_value=-abs(float(j[0][3:]) - 0.01))
                for j in jobs
            ],
            overrides=suggest,
            names=["val/acc_best"],
            heartbeat_s=60,
            grace_s=180,
        ).run()

    alone = optuna.storages.InMemoryStorage()
    run(alone, n_trials=8)
    shared = optuna.storages.InMemoryStorage()
    for n_trials in (1, 3, 8):  # worker 0; worker 1, which reseeds; the rerun
        run(shared, n_trials=n_trials)
    one = [t.params for t in optuna.load_study(study_name="s", storage=alone).trials]
    many = [t.params for t in optuna.load_study(study_name="s", storage=shared).trials]
    assert many[:5] == one[:5]
    assert len({str(sorted(p.items())) for p in many}) == len(many) == 8
    again = optuna.storages.InMemoryStorage()
    run(again, n_trials=8)  # one worker alone still draws as it did: the start-up, then TPE's
    assert [t.params for t in optuna.load_study(study_name="s", storage=again).trials] == one


@pytest.mark.parametrize("where", ["asking", "suggesting"])
def test_ctrl_c_before_a_trial_is_launched_queues_its_point_first(where: str):
    """Ctrl-C can land after a trial is asked and before its job starts (its start-up point
    given, its values suggested): that trial is interrupted and its point queued to run first,
    as a launched one is, not left running for recovery to find."""
    from cifar_sweep.sweep import start_up
    from cifar_sweep.sweep.contract import INTERRUPTED
    from cifar_sweep.sweep.loop import WorkerLoop

    s = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    take = start_up.StartUp.take

    def ctrl_c(*args):
        raise KeyboardInterrupt

    def suggest(trials):
        for t in trials:
            t.suggest_float("x", 0, 1)
        if where == "suggesting" and trials[0].study is s:  # not the start-up sequence's draws
            ctrl_c()
        return [[f"x={t.params['x']}"] for t in trials]

    loop = WorkerLoop(
        study=s, n_trials=2, n_jobs=1, grid=False, failure_budget=0, max_retry=1,
        launch=lambda jobs, initial_job_idx: pytest.fail("nothing is launched"),
        overrides=suggest, names=["val/acc_best"], heartbeat_s=60, grace_s=180,
    )  # fmt: skip
    if where == "asking":  # the start-up point given, then Ctrl-C
        start_up.StartUp.take = lambda self, trial: (take(self, trial), ctrl_c())
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run()
    finally:
        start_up.StartUp.take = take
    stopped, queued = s.trials
    assert stopped.state == TrialState.FAIL and stopped.user_attrs[FAIL_KIND] == INTERRUPTED
    assert queued.state == TrialState.WAITING and queued.user_attrs[RETRY_OF] == 0
    assert queued.system_attrs["fixed_params"] == stopped.system_attrs["fixed_params"]
