"""A study's database that goes away under a running sweep: for seconds (a restart, a failover)
it costs retries, not the sweep; for good, the sweep stops in one line and the trials in flight
are recovered by the rerun."""

import os
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, sweep_cmd
from optuna.trial import TrialState

TINY_MODEL = ("model=tiny_cnn", "model.channels=[8]", "model.hidden=16")


def env_url(url: str) -> tuple[str, dict]:
    """The storage as a user writes it (the password from the environment), and that env."""
    password = url.split(":")[2].split("@")[0]
    env = {**os.environ, "CIFAR_SWEEP_DB_PASSWORD": password}
    return url.replace(password, "${oc.env:CIFAR_SWEEP_DB_PASSWORD}"), env


def start_sweep(tmp_path: Path, url: str, *args: str) -> subprocess.Popen:
    storage, env = env_url(url)
    cmd = sweep_cmd(tmp_path, *TINY_MODEL, "sweeper=random", *args, storage=storage)
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(url: str) -> int:
    """Finished trials of the one study, or -1 while the database does not answer."""
    try:
        [name] = optuna.get_all_study_names(url)
        s = optuna.load_study(study_name=name, storage=url)
    except Exception:
        return -1
    return len(s.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))


def wait_until(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


@pytest.mark.slow  # a real PostgreSQL restarted under two workers: about a minute
def test_a_database_restarted_under_a_sweep_of_two_workers_costs_retries_not_the_sweep(
    tmp_path, pg_server
):
    args = ("hydra.sweeper.workers=2", "hydra.sweeper.devices=[cpu]", "hydra.sweeper.n_trials=6")
    proc = start_sweep(tmp_path, pg_server.url, *args, "trainer.max_epochs=3")
    wait_until(lambda: finished(pg_server.url) >= 1, proc)
    pg_server.restart()  # pg_ctl restart -m fast: every connection is closed
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "StorageInternalError" not in err
    assert finished(pg_server.url) == 6


@pytest.mark.slow  # a real PostgreSQL stopped under a sweep, then started for the rerun
def test_a_database_gone_for_good_stops_the_sweep_in_one_line_and_the_rerun_recovers(
    tmp_path, pg_server
):
    args = ("hydra.sweeper.n_trials=3", "hydra.sweeper.db_outage_s=5", "trainer.max_epochs=10")
    proc = start_sweep(tmp_path, pg_server.url, *args)
    storage = pg_server.url

    def running() -> bool:
        try:
            [name] = optuna.get_all_study_names(storage)
            s = optuna.load_study(study_name=name, storage=storage)
        except Exception:
            return False
        return bool(s.get_trials(states=(TrialState.RUNNING,)))

    wait_until(running, proc)
    time.sleep(2)  # training
    pg_server.stop()
    stopped = time.time()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and time.time() - stopped < 120
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: hydra.sweeper.storage=postgresql://sweep:***@"), last
    assert "has not answered for hydra.sweeper.db_outage_s=5 s" in last
    pg_server.start()
    rerun = start_sweep(tmp_path, pg_server.url, *args)  # the same command, typed again
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    [name] = optuna.get_all_study_names(storage)
    s = optuna.load_study(study_name=name, storage=storage)
    assert len(s.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert not s.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
