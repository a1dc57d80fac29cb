"""Optuna sweeps through `python -m cifar_sweep -m`: what a user sees in the study."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, tiny
from optuna.trial import TrialState

PLOTS = {"optimization_history", "param_importances", "parallel_coordinate", "slice", "contour",
         "intermediate_values"}  # fmt: skip


def sweep_cmd(tmp_path: Path, *args: str, storage: str | None = None) -> list[str]:
    storage = storage or f"sqlite:///{tmp_path / 'studies.db'}"
    return [
        sys.executable, "-m", "cifar_sweep", "-m", *tiny(["trainer.max_epochs=1", *args]),
        f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip


def sweep(tmp_path: Path, *args: str, ok: bool = True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(
        sweep_cmd(tmp_path, *args, **kw), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def study(tmp_path: Path, storage: str | None = None) -> optuna.Study:
    storage = storage or f"sqlite:///{tmp_path / 'studies.db'}"
    [name] = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def states(s: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in s.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def distinct_params(trials: list) -> int:
    return len({tuple(sorted(t.params.items())) for t in trials})


def test_default_sweep_is_tpe_over_lr_and_weight_decay_with_a_report(tmp_path: Path):
    result = sweep(tmp_path, "pruner=median", "trainer.max_epochs=2", "hydra.sweeper.n_trials=4")
    s = study(tmp_path)
    assert "TPESampler, MedianPruner" in result.stdout  # the sweep's start line
    assert set(states(s)) <= {"COMPLETE", "PRUNED"}
    assert len(s.trials) == 4 and distinct_params(s.trials) == 4
    for t in s.trials:
        lr, wd = t.distributions["optimizer.lr"], t.distributions["optimizer.weight_decay"]
        assert lr.log and wd.log and (lr.low, lr.high) == (1e-4, 1e-1)
        assert len(t.intermediate_values) >= 1  # the job reported to its trial
    assert "trial 3 (4/4)" in result.stdout and "best=" in result.stdout
    out = tmp_path / "sweep"
    assert {p.stem for p in (out / "plots").glob("*.png")} == PLOTS
    assert (out / "optimization_results.yaml").read_text().count("optimizer.lr") == 1
    assert len((out / "trials.csv").read_text().splitlines()) == 5
    assert sorted(p.name for p in out.glob("[0-9]*")) == ["0", "1", "2", "3"]  # trial numbers
    # the same report on demand, from the storage alone
    report = subprocess.run(
        [sys.executable, "-m", "cifar_sweep.report", f"sqlite:///{tmp_path / 'studies.db'}",
         "--out", str(tmp_path / "report")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert {p.stem for p in (tmp_path / "report" / "plots").glob("*.png")} == PLOTS


@pytest.mark.parametrize(
    ("sampler", "name"),
    [("random", "RandomSampler"),
     pytest.param("cmaes", "CmaEsSampler", marks=pytest.mark.slow),  # 15 s each: keep CI short
     pytest.param("qmc", "QMCSampler", marks=pytest.mark.slow),
     pytest.param("gp", "GPSampler", marks=pytest.mark.slow)],
)  # fmt: skip
def test_each_sampler_runs_distinct_trials(sampler: str, name: str, tmp_path: Path):
    result = sweep(tmp_path, f"sweeper={sampler}", "hydra.sweeper.n_trials=3")
    assert f": {name}, " in result.stdout
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 3} and distinct_params(s.trials) == 3


def test_command_line_list_is_an_exact_grid_that_a_rerun_does_not_repeat(tmp_path: Path):
    """The plain Hydra multirun `key=a,b,c -m`: one job per value, each once."""
    args = ("optimizer.lr=0.01,0.02,0.03", "optimizer=sgd", "scheduler=constant")
    result = sweep(tmp_path, *args)
    runs = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/metrics.json")]
    assert sorted(r["lr"] for r in runs) == pytest.approx([0.01, 0.02, 0.03])
    assert ": GridSampler, " in result.stdout
    s = study(tmp_path)
    assert all("grid_id" in t.system_attrs for t in s.trials)
    assert sorted(t.params["optimizer.lr"] for t in s.trials) == [0.01, 0.02, 0.03]
    assert all(set(t.params) == {"optimizer.lr"} for t in s.trials)  # the YAML space is replaced
    sweep(tmp_path, *args)
    assert len(study(tmp_path).trials) == 3


def test_command_line_interval_replaces_the_default_space(tmp_path: Path):
    args = ("optimizer.lr=tag(log, interval(0.001, 0.1))", "hydra.sweeper.n_trials=2")
    assert ": TPESampler, " in sweep(tmp_path, *args).stdout
    s = study(tmp_path)
    assert len(s.trials) == 2
    assert all(set(t.params) == {"optimizer.lr"} for t in s.trials)


def test_hopeless_trials_are_pruned_early(tmp_path: Path):
    sweep(
        tmp_path, "sweeper=random", "pruner=median", "optimizer.lr=choice(1e-6, 0.05)",
        "trainer.max_epochs=4", "hydra.sweeper.n_trials=6",
    )  # fmt: skip
    s = study(tmp_path)
    pruned = [t for t in s.trials if t.state == TrialState.PRUNED]
    assert pruned, states(s)
    for t in pruned:
        assert t.params["optimizer.lr"] == 1e-6
        assert len(t.intermediate_values) < 4  # trained fewer epochs than the limit
        assert t.value is None or t.value == t.intermediate_values[t.last_step]
    assert len([t for t in s.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 6


def test_nan_and_raising_trials_fail_with_a_reason_and_the_sweep_goes_on(tmp_path: Path):
    sweep(
        tmp_path, "objective=val/loss", "hydra.sweeper.direction=minimize",
        "optimizer.lr=0.01,1e30", "model.norm=batch,bogus", "hydra.sweeper.max_failure_rate=0.9",
    )  # fmt: skip
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 1, "FAIL": 3}
    reasons = [t.user_attrs["fail_reason"] for t in s.trials if t.state == TrialState.FAIL]
    assert sum("diverged" in r for r in reasons) == 1
    assert sum("model.norm" in r for r in reasons) == 2


def test_too_many_failures_stop_the_sweep_with_a_message(tmp_path: Path):
    result = sweep(
        tmp_path, "model.norm=bogus,batch", "hydra.sweeper.max_failure_rate=0.2", ok=False
    )
    assert result.returncode != 0
    assert "max_failure_rate" in result.stderr and "Traceback" not in result.stderr


def test_killed_sweep_resumes_to_exactly_n_trials(tmp_path: Path):
    args = ("hydra.sweeper.n_trials=4", "trainer.max_epochs=3", "hydra.sweeper.heartbeat_s=1",
            "hydra.sweeper.grace_s=2", "sweeper=random")  # fmt: skip
    proc = subprocess.Popen(sweep_cmd(tmp_path, *args), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(tmp_path, done=1)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = study(tmp_path)
    done = {t.number: t.params for t in before.trials if t.state == TrialState.COMPLETE}
    [killed] = [t for t in before.trials if t.state == TrialState.RUNNING]
    assert done
    time.sleep(2.5)  # past the grace period
    sweep(tmp_path, *args)
    s = study(tmp_path)
    finished = [t for t in s.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert all(s.trials[n].state == TrialState.COMPLETE for n in done)  # nothing lost
    assert s.trials[killed.number].state == TrialState.FAIL
    retried = [t for t in s.trials if t.number > killed.number and t.params == killed.params]
    assert retried, "the killed trial's parameters were not retried"
    folders = {int(p.name) for p in (tmp_path / "sweep").glob("[0-9]*")}
    assert {t.number for t in finished} <= folders  # one folder per trial, none overwritten


def wait_for(tmp_path: Path, done: int, timeout: float = 300) -> None:
    """Until the study holds `done` complete trials and one running trial."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            got = states(study(tmp_path))
        except (ValueError, KeyError, optuna.exceptions.StorageInternalError):
            continue
        if got.get("COMPLETE", 0) >= done and got.get("RUNNING", 0) == 1:
            return
    raise AssertionError("the sweep never reached a running trial")


def test_ctrl_c_keeps_finished_trials_and_queues_the_interrupted_one(tmp_path: Path):
    args = ("hydra.sweeper.n_trials=3", "trainer.max_epochs=4", "sweeper=random")

    def default_sigint() -> None:  # a shell's background job ignores SIGINT; a terminal does not
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(sweep_cmd(tmp_path, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=default_sigint)  # fmt: skip
    wait_for(tmp_path, done=1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) != 0
    s = study(tmp_path)
    [stopped] = [t for t in s.trials if t.state == TrialState.FAIL]
    assert stopped.user_attrs["fail_reason"] == "interrupted"
    [queued] = [t for t in s.trials if t.state == TrialState.WAITING]
    assert queued.system_attrs["fixed_params"] == stopped.params
    sweep(tmp_path, *args)
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 3, "FAIL": 1}
    rerun = s.trials[queued.number]  # the queued point ran first, with the same parameters
    assert rerun.state == TrialState.COMPLETE and rerun.params == stopped.params


def test_two_workers_share_one_study(tmp_path: Path):
    cmd = sweep_cmd(tmp_path, "hydra.sweeper.n_trials=5", "sweeper=random")
    procs = [
        subprocess.Popen([*cmd, f"hydra.sweep.dir={tmp_path / f'sweep{i}'}"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    s = study(tmp_path)
    complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5
    # a trial asked by both workers at the same moment steps back before it runs
    assert all("not run" in t.user_attrs["fail_reason"] for t in s.trials if t not in complete)
    assert distinct_params(complete) == 5  # the second worker does not replay the seeded trials
    assert all("trial " in out for out in outputs)  # both workers ran trials


def test_joblib_launcher_runs_trials_in_parallel_processes(tmp_path: Path):
    sweep(
        tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2", "pruner=median",
    )  # fmt: skip
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 2}
    assert all(t.intermediate_values for t in s.trials)  # reported from the worker processes


def test_multi_objective_study_reports_a_pareto_front(tmp_path: Path):
    sweep(tmp_path, "sweeper=nsgaii", "hydra.sweeper.n_trials=3")
    s = study(tmp_path)
    assert len(s.directions) == 2 and states(s) == {"COMPLETE": 3}
    assert all(len(t.values) == 2 for t in s.trials)
    assert (tmp_path / "sweep" / "plots" / "pareto_front.png").exists()
    assert "solutions" in (tmp_path / "sweep" / "optimization_results.yaml").read_text()


def test_literal_password_in_storage_is_refused(tmp_path: Path):
    result = sweep(tmp_path, ok=False, storage="postgresql://user:hunter2@127.0.0.1:1/db")
    assert result.returncode != 0 and "hydra.sweeper.storage" in result.stderr
    assert not any("hunter2" in p.read_text(errors="ignore")
                   for p in tmp_path.rglob("*") if p.is_file())  # fmt: skip


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server (Debian's package) on a free port, or a skip saying why."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL server not installed (Debian package postgresql)")
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[postgres]')")
    bindir = bins[-1].parent
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="cifar-sweep-pg-"))  # pytest's tmp is private to root
    data, sock = home / "pgdata", home / "pgsock"
    sock.mkdir()
    if as_user:
        shutil.chown(home, "postgres")
        shutil.chown(sock, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*cmd):  # noqa: E306
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    steps = [
        [bindir / "initdb", "-D", data, "-A", "trust", "--auth-host=scram-sha-256",
         "-U", "postgres"],
        [bindir / "pg_ctl", "-D", data, "-w", "-l", home / "pg.log", "-o",
         f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "start"],
        [bindir / "psql", "-h", sock, "-p", str(port), "-U", "postgres", "-c",
         "CREATE USER sweep PASSWORD 'sweep-secret'"],
        [bindir / "createdb", "-h", sock, "-p", str(port), "-U", "postgres", "-O", "sweep",
         "studies"],
    ]  # fmt: skip
    try:
        for cmd in steps:
            result = run(*map(str, cmd))
            if result.returncode != 0:
                pytest.skip(f"PostgreSQL did not start: {cmd[0].name}: {result.stderr[:200]}")
        yield f"postgresql://sweep:sweep-secret@127.0.0.1:{port}/studies"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


def test_postgres_storage_with_the_password_from_the_environment(postgres, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_SWEEP_DB_PASSWORD", "sweep-secret")
    storage = postgres.replace("sweep-secret", "${oc.env:CIFAR_SWEEP_DB_PASSWORD}")
    sweep(tmp_path, "hydra.sweeper.n_trials=2", "pruner=median", storage=f"'{storage}'")
    s = study(tmp_path, storage=postgres)
    assert states(s) == {"COMPLETE": 2} and all(t.intermediate_values for t in s.trials)
    written = [p for p in (tmp_path / "sweep").rglob("*") if p.is_file()]
    assert written and not any("sweep-secret" in p.read_text(errors="ignore") for p in written)


def test_a_trial_asked_past_n_trials_steps_back_without_counting_as_a_failure():
    from hydra_plugins.cifar_sweep_optuna._loop import SURPLUS, drop_surplus, states

    s = optuna.create_study()
    for _ in range(4):
        s.tell(s.ask(), 1.0)
    first, second = s.ask(), s.ask()  # two workers asked at the same moment for the 5th trial
    kept = drop_surplus(s, [first, second], n_trials=5)
    assert kept == [first]
    assert s.trials[second.number].state == TrialState.FAIL
    assert s.trials[second.number].user_attrs["fail_reason"] == SURPLUS
    assert states(s)[TrialState.FAIL] == 0  # not charged to the budget


def test_a_worker_whose_trial_overshoots_n_trials_runs_nothing_and_stops():
    """Force the race: another worker asks for the last trial between this worker's count and
    its own ask; this worker's trial (the higher number) steps back and is never launched."""
    from hydra_plugins.cifar_sweep_optuna._loop import SURPLUS, WorkerLoop

    study = optuna.create_study(direction="maximize")
    for _ in range(4):
        study.tell(study.ask(), 0.5)
    create = study._storage.create_new_trial
    others = []

    def another_worker_asks_first(study_id, template_trial=None):
        if not others:
            others.append(create(study_id))  # left RUNNING in the other worker
        return create(study_id, template_trial)

    study._storage.create_new_trial = another_worker_asks_first
    launched = []
    loop = WorkerLoop(
        study=study, n_trials=5, n_jobs=1, grid=False, failure_budget=1,
        launch=lambda jobs, initial_job_idx: launched.append(jobs),
        overrides=lambda trials: [[f"x={t.suggest_float('x', 0, 1)}"] for t in trials],
        names=["val/acc_best"], heartbeat_s=60,
    )  # fmt: skip
    loop.run()
    assert launched == []
    assert [t.state for t in study.trials[4:]] == [TrialState.RUNNING, TrialState.FAIL]
    assert study.trials[5].user_attrs["fail_reason"] == SURPLUS
