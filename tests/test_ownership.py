"""Trial ownership through real processes: a live trial is never failed (clock offsets, other PID
namespaces), a dead one never stays RUNNING (killed before its claim, a hung job), a late result
is kept, and SIGTERM ends a worker cleanly. Workers here run the real WorkerLoop on a sqlite
study with a stand-in launcher, so each test takes seconds, not a training run."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT
from optuna.trial import TrialState

from cifar_sweep.sweep import contract, ownership, recovery
from cifar_sweep.sweep.contract import FAIL_KIND, OWNER, RETRY_OF, classify
from cifar_sweep.sweep.storage import open_storage

# A worker process. argv: storage url, mode, grace_s[, n_trials]. Modes: hold (claim one trial,
# then sleep), check (one recovery pass; prints how many trials it failed), ask_then_die (killed
# between ask and claim), ask_then_wait (alive, not claiming yet), and loop-<job> (the
# WorkerLoop, whose stand-in job is: instant; stall, which beats once as training would, says
# "training", then makes no progress until the file `go` appears; term_after_tell, which gets
# SIGTERM right after its first trial is told).
WORKER = r"""
import logging, os, signal, sys, time
from pathlib import Path
import optuna
from hydra.core.utils import JobReturn, JobStatus
from cifar_sweep.sweep import contract, loop, outcome, ownership, recovery
from cifar_sweep.sweep.heartbeat import Heartbeat
from cifar_sweep.sweep.storage import open_storage

logging.basicConfig(level=logging.INFO, format="%(message)s")
url, mode, grace = sys.argv[1], sys.argv[2], int(sys.argv[3])
storage = open_storage(url, heartbeat_s=1, grace_s=grace)
study = optuna.create_study(
    study_name="s", storage=storage, direction="maximize", load_if_exists=True
)
if mode == "hold":
    trial = study.ask()
    ownership.claim(study, trial, worker=0, device="cpu")
    print("claimed", trial.number, flush=True)
    time.sleep(600)
elif mode == "check":
    print(recovery.recover(study, max_retry=1, grace_s=grace), flush=True)
elif mode.startswith("ask_then_"):  # registered as a loop's worker is, killed before it claims
    ownership.register(study, worker=0, device="cpu")
    study.ask()
    if mode == "ask_then_die":
        os.kill(os.getpid(), signal.SIGKILL)
    print("asked", flush=True)
    time.sleep(600)
else:
    job = mode.removeprefix("loop-")

    def run_job(trial_id):
        if job == "stall":  # as a real job: its own storage, beats from training, then stalls
            own = open_storage(url, heartbeat_s=1, grace_s=grace)
            trial = optuna.trial.Trial(optuna.load_study(study_name="s", storage=own), trial_id)
            Heartbeat(trial, every_s=1).on_train_batch_end(None, None, None, None, 0)
            print("training", flush=True)
            while not Path("go").exists():
                time.sleep(0.2)
        ret = JobReturn()
        ret.status, ret.return_value = JobStatus.COMPLETED, 0.5
        return ret

    def launch(jobs, initial_job_idx):
        ids = [int(o.split("=")[1]) for j in jobs for o in j if o.startswith("+trial.id=")]
        return [run_job(i) for i in ids]

    if job == "term_after_tell":
        told = outcome.tell

        def tell_then_sigterm(*args):
            told(*args)
            os.kill(os.getpid(), signal.SIGTERM)

        outcome.tell = tell_then_sigterm
    loop.WorkerLoop(
        study=study, n_trials=int(sys.argv[4]), n_jobs=1, grid=False, failure_budget=0,
        launch=launch, overrides=lambda ts: [[f"x={t.suggest_float('x', 0, 1)}"] for t in ts],
        names=["acc"], heartbeat_s=1, grace_s=grace, max_retry=1,
    ).run()
"""


def worker_cmd(url: str, mode: str, grace_s: int, *rest: str, prefix=()) -> list[str]:
    return [*prefix, sys.executable, "-c", WORKER, url, mode, str(grace_s), *rest]


def run_worker(tmp_path: Path, url: str, *args, prefix=(), **kw) -> subprocess.CompletedProcess:
    cmd = worker_cmd(url, *args, prefix=prefix)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def start_worker(tmp_path: Path, url: str, *args, prefix=()) -> subprocess.Popen:
    """A worker in the background; returns once it has printed its first line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        worker_cmd(url, *args, prefix=prefix),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    assert first, proc.stderr.read()[-3000:]
    return proc


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=url)


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


def needs(*cmd: str) -> None:
    """Skip, saying why, where this kernel or user cannot make the namespace `cmd` asks for."""
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed")
    probe = subprocess.run([*cmd, "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"{' '.join(cmd)} fails here: {probe.stderr.strip()[:200]}")


@pytest.mark.slow  # real processes, tens of seconds; make test-slow and CI run it
def test_a_live_owner_is_not_failed_by_a_checker_whose_boot_clock_is_offset(tmp_path, url):
    """A checker whose boot clock differs by 5 s (a time namespace; psutil's create_time moves
    the same way when the boot time is adjusted) still leaves the live trial alone."""
    offset = ("unshare", "-T", "--boottime", "5", "--fork")
    needs(*offset)
    holder = start_worker(tmp_path, url, "hold", 600)
    try:
        for prefix in (offset, ()):
            checked = run_worker(tmp_path, url, "check", 600, prefix=prefix)
            assert checked.stdout.strip() == "0", checked.stderr[-2000:]
        assert load(url).trials[0].state == TrialState.RUNNING
    finally:
        stop(holder)
    checked = run_worker(tmp_path, url, "check", 600)  # the same checker, owner now dead
    assert checked.stdout.strip() == "1"
    [dead, retry] = load(url).trials
    assert classify(dead) == contract.WORKER_DIED and retry.user_attrs[RETRY_OF] == dead.number


def test_start_ticks_match_within_a_tolerance_and_not_beyond():
    me = ownership.this_process(worker=0, device="cpu", trial=0)
    assert not ownership.gone(me)
    assert not ownership.gone({**me, "ticks": me["ticks"] + ownership.TICKS_TOLERANCE})
    assert ownership.gone({**me, "ticks": me["ticks"] + 100})  # another process, same pid
    assert not ownership.gone({**me, "boot": "another-boot", "ticks": 0})  # cannot see: wait


@pytest.mark.slow  # real processes, tens of seconds; make test-slow and CI run it
def test_workers_in_two_pid_namespaces_never_fail_each_others_live_trials(tmp_path, url):
    """Same host name, same files, separate PID namespaces: each sees the other's owner pid as
    missing or as someone else, so neither may judge; heartbeats do."""
    ns = ("unshare", "-p", "-f", "--mount-proc", "--kill-child")
    needs(*ns)
    inside = start_worker(tmp_path, url, "hold", 600, prefix=ns)  # trial 0, pid 1 or so
    outside = start_worker(tmp_path, url, "hold", 600)  # trial 1
    try:
        for prefix in ((), ns):
            checked = run_worker(tmp_path, url, "check", 600, prefix=prefix)
            assert checked.stdout.strip() == "0", checked.stderr[-2000:]
        trials = load(url).trials
        assert [t.state for t in trials] == [TrialState.RUNNING] * 2
        assert trials[0].user_attrs[OWNER]["pidns"] != trials[1].user_attrs[OWNER]["pidns"]
    finally:
        stop(outside)
        stop(inside)
    assert run_worker(tmp_path, url, "check", 600).stdout.strip() == "1"  # its own dead one
    assert load(url).trials[0].state == TrialState.RUNNING  # the other namespace's: heartbeats


@pytest.mark.slow  # real processes, tens of seconds; make test-slow and CI run it
def test_a_worker_killed_between_ask_and_claim_is_recovered_at_once(tmp_path, url):
    """A trial asked but not yet claimed waits while a worker that may claim it lives, and is
    recovered by the very next process once every such worker is gone (no grace_s wait)."""
    alive = start_worker(tmp_path, url, "ask_then_wait", 600)
    try:
        assert run_worker(tmp_path, url, "check", 600).stdout.strip() == "0"  # it may claim
    finally:
        stop(alive)
    assert run_worker(tmp_path, url, "check", 600).stdout.strip() == "1"  # gone: at once
    died = run_worker(tmp_path, url, "ask_then_die", 600)
    assert died.returncode == -signal.SIGKILL
    done = run_worker(tmp_path, url, "loop-instant", 600, "2")  # grace_s far away: at once
    assert done.returncode == 0, done.stderr[-3000:]
    assert "running in other workers" not in done.stderr
    s = load(url)
    assert [classify(t) for t in s.trials].count(contract.COMPLETE) == 2
    assert [classify(t) for t in s.trials[:2]] == [contract.WORKER_DIED] * 2
    assert not s.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.slow  # real processes, tens of seconds; make test-slow and CI run it
def test_a_stalled_job_is_failed_and_retried_and_its_late_result_is_kept(tmp_path, url):
    """The job stops making progress while its process lives (the sweep's own thread would
    beat for it forever): after grace_s it is failed and queued again. When it finishes after
    all, before the retry starts, its result is added and the retry steps back."""
    proc = start_worker(tmp_path, url, "loop-stall", 3, "1")
    try:
        checker = open_storage(url, heartbeat_s=1, grace_s=3)
        s = optuna.load_study(study_name="s", storage=checker)
        deadline = time.time() + 120
        while s.trials[0].state == TrialState.RUNNING and time.time() < deadline:
            recovery.recover(s, max_retry=1, grace_s=3)  # what any other worker does each round
            time.sleep(0.5)
        first, retry = s.trials
        assert classify(first) == contract.WORKER_DIED and proc.poll() is None  # hung, alive
        assert retry.state == TrialState.WAITING and retry.user_attrs[RETRY_OF] == 0
        (tmp_path / "go").touch()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert "result kept" in err
    # the woken worker's line for its trial says what happened, not "no reason recorded"
    assert "fail  no heartbeat for 3 s (grace_s): hung" in err and "a retry keeps the point" in err
    first, retry, late = load(url).trials
    assert retry.user_attrs[FAIL_KIND] == contract.NOT_RUN
    assert late.state == TrialState.COMPLETE and late.value == 0.5 and late.params == first.params


@pytest.mark.slow  # moved to slow to keep the default run under 3 minutes; CI runs it
def test_sigterm_between_trials_ends_the_worker_without_asking_for_another(tmp_path, url):
    done = run_worker(tmp_path, url, "loop-term_after_tell", 600, "3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopping before the next trial" in done.stderr
    assert [t.state for t in load(url).trials] == [TrialState.COMPLETE]


def test_sigterm_during_a_trial_queues_its_point_again(tmp_path, url):
    proc = start_worker(tmp_path, url, "loop-stall", 600, "3")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    stopped, queued = load(url).trials
    assert stopped.user_attrs[FAIL_KIND] == contract.INTERRUPTED
    assert queued.state == TrialState.WAITING
    assert queued.system_attrs["fixed_params"] == stopped.params
