"""Sweeps through a real SLURM scheduler (`.ci/slurm-up` starts a one-node one): the shipped
array script as the README shows it, a task cancelled mid-trial whose point another task goes
on with from its last finished epoch, and a dead job's trial recovered at once."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, TINY, run_cli
from sqlalchemy.exc import SQLAlchemyError

from cifar_sweep.sweep import contract, recovery

pytestmark = pytest.mark.slurm
SCRIPT = ROOT / "examples" / "slurm" / "sweep.sbatch"


def _scheduler_answers() -> bool:
    if shutil.which("sbatch") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


if not _scheduler_answers():
    pytest.skip(
        "no SLURM scheduler here (sbatch missing or sinfo fails): run .ci/slurm-up",
        allow_module_level=True,
    )


def submit(
    tmp_path: Path, *args: str, array: str = "0-1", wait: bool = True, extra=(), ok: bool = True
) -> str:
    """sbatch the shipped script from tmp_path (outputs land there); return the array job id."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)  # the task's threads come from SLURM, as for a user
    cmd = ["sbatch", "--parsable", f"--array={array}", f"--chdir={tmp_path}", *extra]
    cmd += [*(["--wait"] if wait else []), str(SCRIPT), *TINY, "model=tiny_cnn", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("slurm-*.out")))
    assert done.returncode == 0 or not ok, done.stderr + logs[-4000:]
    return done.stdout.strip().split(";")[0]


def the_study(tmp_path: Path) -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'outputs' / 'studies.db'}"
    [name] = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path: Path, monkeypatch) -> tuple[str, str]:
    """(the URL the tasks are given, the URL to read the study): the sweep's default sqlite
    file, or the PostgreSQL server with its password in the environment, as across nodes."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'outputs' / 'studies.db'}"
        return "hydra.sweeper.storage=sqlite:///outputs/studies.db", url
    url = request.getfixturevalue("postgres")
    monkeypatch.setenv("CIFAR_SWEEP_DB_PASSWORD", "sweep-secret")  # the tasks inherit it
    given = url.replace("sweep-secret", "${oc.env:CIFAR_SWEEP_DB_PASSWORD}")
    return f"hydra.sweeper.storage={given}", url


def test_an_array_of_workers_shares_one_study_one_folder_and_one_report(tmp_path, storage):
    given, url = storage
    args = ["hydra.sweeper.n_trials=4", "trainer.max_epochs=1", given]
    job = submit(tmp_path, *args, array="0-2")
    [name] = optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    finished = [t for t in study.trials if contract.classify(t) in contract.FINISHED]
    assert len(finished) == 4
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 4
    [folder] = (tmp_path / "outputs" / "multirun").iterdir()
    assert folder.name == job  # one sweep folder per array job, whatever second a task started
    assert (folder / "optimization_results.yaml").exists()
    assert (folder / "plots" / "timeline.png").exists()
    owners = [t.user_attrs[contract.OWNER] for t in study.trials]
    assert {o["slurm_job"] for o in owners} <= {f"{job}_{i}" for i in range(3)}
    assert {o["worker"] for o in owners} == {int(o["slurm_job"].split("_")[1]) for o in owners}
    logs = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert "SLURM array task, 1 CPU threads" in logs  # --cpus-per-task=1 of the script


def _running_trial_with_checkpoint(tmp_path: Path, timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.2)
        if not (tmp_path / "outputs" / "studies.db").exists():
            continue
        try:
            running = the_study(tmp_path).get_trials(states=(optuna.trial.TrialState.RUNNING,))
        except (ValueError, KeyError, SQLAlchemyError):  # the tasks are creating the study
            continue
        for t in running:
            folder = Path(t.user_attrs.get(contract.RUN_DIR, "/nonexistent"))
            if (folder / "checkpoints" / "last.ckpt").exists():
                return t
    raise AssertionError("no running trial reached the end of its first epoch")


def test_a_cancelled_task_trial_goes_on_from_its_last_epoch_elsewhere(tmp_path: Path):
    epochs = 6
    same = [f"trainer.max_epochs={epochs}", "trainer.deterministic=true"]
    job = submit(tmp_path, "hydra.sweeper.n_trials=3", *same, wait=False)
    t = _running_trial_with_checkpoint(tmp_path)
    task = t.user_attrs[contract.OWNER]["slurm_job"]
    cancelled = time.time()
    subprocess.run(["scancel", task], check=True)
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout:
        time.sleep(0.5)  # until every task of the array has ended
    study = the_study(tmp_path)
    finished = [x for x in study.trials if contract.classify(x) in contract.FINISHED]
    assert len(finished) == 3  # exactly n_trials, the cancelled point among them
    [stopped] = [x for x in study.trials if x.number == t.number]
    assert contract.classify(stopped) == contract.INTERRUPTED
    [retry] = [x for x in study.trials if x.user_attrs.get(contract.RETRY_OF) == t.number]
    assert retry.user_attrs[contract.RESUME] == t.user_attrs[contract.RUN_DIR]
    assert retry.datetime_start.timestamp() >= cancelled - 1
    log = (Path(retry.user_attrs[contract.RUN_DIR]) / "__main__.log").read_text()
    done = int(log.split("going on from epoch ")[1].split()[0])
    assert 1 <= done < epochs  # the retry trained only the epochs the cancelled run had not
    assert sorted(retry.intermediate_values) == list(range(epochs))  # the whole curve
    print(f"epochs saved by resuming: {done} of {epochs}")
    # the resumed trial ends where the same point run without a stop ends, to the last digit
    point = [f"{k}={v!r}" for k, v in retry.params.items()]
    whole = run_cli("model=tiny_cnn", *same, *point, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert retry.value == metrics["val/acc_best"]


@pytest.mark.timeout(600)  # two arrays of tasks, then the same point uninterrupted
def test_a_cancelled_task_of_two_rank_trials_is_resumed_by_the_other(tmp_path: Path):
    """The shipped script with one task per group of 2 CPUs (--cpus-per-task=2: the worker
    starts a trial's two ranks itself, so SLURM counts one task; gloo on one node needs no
    srun): a task cancelled mid-trial leaves its point to the other task, which goes on from
    the last finished epoch on two ranks and ends where an uninterrupted 2-rank run ends."""
    epochs = 4
    ddp = ["trainer.devices=2", "trainer.strategy=ddp", "dataset.batch_size=16"]
    same = [*ddp, f"trainer.max_epochs={epochs}", "trainer.deterministic=true"]
    same += ["dataset.train_per_class=1000"]
    job = submit(
        tmp_path, "hydra.sweeper.n_trials=2", *same, wait=False, extra=["--cpus-per-task=2"]
    )
    t = _running_trial_with_checkpoint(tmp_path)
    task = t.user_attrs[contract.OWNER]["slurm_job"]
    subprocess.run(["scancel", task], check=True)
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout:
        time.sleep(0.5)
    study = the_study(tmp_path)
    assert sum(contract.classify(x) in contract.FINISHED for x in study.trials) == 2
    [stopped] = [x for x in study.trials if x.number == t.number]
    assert contract.classify(stopped) == contract.INTERRUPTED
    [retry] = [x for x in study.trials if x.user_attrs.get(contract.RETRY_OF) == t.number]
    folder = Path(retry.user_attrs[contract.RUN_DIR])
    assert retry.user_attrs[contract.RESUME] == t.user_attrs[contract.RUN_DIR]
    assert (folder / "train_ddp_process_1.log").exists()  # the retry trained on two ranks
    done = int((folder / "__main__.log").read_text().split("going on from epoch ")[1].split()[0])
    assert 1 <= done < epochs
    logs = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert "SLURM array task, 2 CPU threads" in logs
    print(f"epochs saved by resuming on two ranks: {done} of {epochs}")
    point = [f"{k}={v!r}" for k, v in retry.params.items()]
    whole = run_cli("model=tiny_cnn", *same, *point, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert retry.value == metrics["val/acc_best"]


def test_tasks_out_of_time_leave_their_trials_to_the_next_array(tmp_path: Path):
    """A task whose time runs out (SIGTERM before the limit, as the script asks) stops
    mid-trial; the next array goes on with the stopped point from its last finished epoch."""
    epochs, n = 6, 2
    same = [
        "hydra.sweeper.n_trials=2",
        f"trainer.max_epochs={epochs}",
        "dataset.train_per_class=1500",
    ]
    job = submit(tmp_path, *same, array="0-1", wait=False)
    t = _running_trial_with_checkpoint(tmp_path)
    task = t.user_attrs[contract.OWNER]["slurm_job"]
    # its time is up now: the scheduler signals it (--signal=B:TERM@60) as at a real limit
    subprocess.run(["scontrol", "update", f"JobId={task}", "TimeLimit=1"], check=True)
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout:
        time.sleep(0.5)
    study = the_study(tmp_path)
    [stopped] = [x for x in study.trials if x.number == t.number]
    assert contract.classify(stopped) == contract.INTERRUPTED
    submit(tmp_path, *same, array="0-1")
    study = the_study(tmp_path)
    assert sum(contract.classify(x) in contract.FINISHED for x in study.trials) == n
    logs = [
        (Path(x.user_attrs[contract.RUN_DIR]) / "__main__.log").read_text()
        for x in study.trials
        if x.user_attrs.get(contract.RESUME) and contract.classify(x) in contract.FINISHED
    ]
    done = [int(m) for log in logs for m in re.findall(r"going on from epoch (\d+)", log)]
    assert done and all(d >= 1 for d in done), done
    print(f"epochs saved after the time limit: {sum(done)} of {epochs * len(done)}")


def _job(*args: str) -> str:
    done = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_trial_whose_job_the_scheduler_no_longer_runs_is_recovered_at_once(tmp_path: Path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    job = _job("--wrap=sleep 300")
    while (
        "RUNNING"
        not in subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True
        ).stdout
    ):
        time.sleep(0.2)
    trial = study.ask()
    # an owner on another machine: its process cannot be seen from here, only its job
    owner = {"host": "node-b", "boot": "another-boot", "pid": 1, "ticks": 1, "trial": 0}
    trial.set_user_attr(contract.OWNER, {**owner, "slurm_job": job, "slurm_restarts": 0})
    assert recovery.recover(study, max_retry=1, grace_s=3600) == 0  # its job still runs
    subprocess.run(["scancel", job], check=True)
    start = time.time()
    while not recovery.recover(study, max_retry=1, grace_s=3600):
        assert time.time() - start < 60, "never recovered"
        time.sleep(0.2)
    print(f"recovered {time.time() - start:.1f} s after scancel")
    assert contract.classify(study.trials[0]) == contract.WORKER_DIED
    assert study.trials[1].state == optuna.trial.TrialState.WAITING  # its point, queued again


def submitit_sweep(tmp_path: Path, *args: str) -> list[str]:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]'")
    (tmp_path / "outputs").mkdir()
    return [
        sys.executable,
        "-m",
        "cifar_sweep",
        "-m",
        *TINY,
        "model=tiny_cnn",
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.name={job_name(tmp_path)}",  # its jobs, found in squeue by name
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.cpus_per_task=1",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'outputs' / 'studies.db'}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        *args,
    ]


def job_name(tmp_path: Path) -> str:
    return f"cs-{tmp_path.parent.name}-{tmp_path.name}"  # unique across test runs


def queued(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True)
    return out.stdout.split()


def test_a_submitit_sweep_finishes_and_its_trials_name_their_jobs(tmp_path: Path):
    cmd = submitit_sweep(tmp_path, "hydra.sweeper.n_trials=2", "trainer.max_epochs=1")
    cmd = [a for a in cmd if not a.startswith("hydra.sweep.dir=")]  # the default folder
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    study = the_study(tmp_path)
    assert [contract.classify(t) for t in study.trials] == [contract.COMPLETE] * 2
    for t in study.trials:  # each job wrote where the sweep recorded (not a folder of its own)
        assert (Path(t.user_attrs[contract.RUN_DIR]) / "metrics.json").exists()
    owners = [t.user_attrs[contract.OWNER] for t in study.trials]
    assert all(o["slurm_job"] and o["pid"] != os.getpid() for o in owners)  # the jobs, not us
    assert done.stderr.count("sacct") <= 1  # no flood when SLURM keeps no accounting


def test_ctrl_c_in_a_submitit_sweep_leaves_no_job_running(tmp_path: Path):
    # epochs long enough that a job left running would outlive the bound below by far
    many = ["dataset.train_per_class=1000", "trainer.max_epochs=50"]
    cmd = submitit_sweep(tmp_path, "hydra.sweeper.n_trials=2", *many)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    sweep = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, **quiet)
    deadline = time.time() + 300
    while len(queued(job_name(tmp_path))) < 2:
        assert sweep.poll() is None and time.time() < deadline, sweep.stderr.read()[-3000:]
        time.sleep(0.2)
    sweep.send_signal(signal.SIGINT)
    assert sweep.wait(timeout=120) == 130
    stopped = time.time()
    while queued(job_name(tmp_path)):
        assert time.time() - stopped < 5, "jobs outlived their sweep"
        time.sleep(0.2)
    print(f"jobs gone {time.time() - stopped:.1f} s after the sweep ended")
