"""Optuna sweeps through `python -m cifar_sweep -m`: what a user sees in the study."""

import json
import re
from pathlib import Path

import pytest
from conftest import distinct_params, states, study, sweep
from optuna.trial import TrialState

from cifar_sweep import report
from cifar_sweep.sweep.contract import FAIL_REASON

PLOTS = {
    "optimization_history",
    "param_importances",
    "parallel_coordinate",
    "slice",
    "contour",
    "intermediate_values",
    "timeline",
}


def test_default_sweep_is_tpe_over_lr_and_weight_decay_with_a_report(tmp_path: Path):
    result = sweep(
        tmp_path,
        "pruner=median",
        "trainer.max_epochs=2",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.plots=true",
    )
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
    report.main([f"sqlite:///{tmp_path / 'studies.db'}", "--out", str(tmp_path / "report")])
    assert {p.stem for p in (tmp_path / "report" / "plots").glob("*.png")} == PLOTS


@pytest.mark.parametrize(
    ("sampler", "name"),
    [
        ("random", "RandomSampler"),
        pytest.param("cmaes", "CmaEsSampler", marks=pytest.mark.slow),  # 15 s each: keep CI short
        pytest.param("qmc", "QMCSampler", marks=pytest.mark.slow),
        pytest.param("gp", "GPSampler", marks=pytest.mark.slow),
    ],
)
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


@pytest.mark.slow  # a pruned sweep of real trials, about 9 s: CI runs it
def test_hopeless_trials_are_pruned_early(tmp_path: Path):
    sweep(
        tmp_path,
        "sweeper=random",
        "pruner=median",
        "optimizer.lr=choice(1e-6, 0.05)",
        "trainer.max_epochs=4",
        "hydra.sweeper.n_trials=6",
    )
    s = study(tmp_path)
    pruned = [t for t in s.trials if t.state == TrialState.PRUNED]
    assert pruned, states(s)
    for t in pruned:
        assert t.params["optimizer.lr"] == 1e-6
        assert len(t.intermediate_values) < 4  # trained fewer epochs than the limit
        assert t.value is None or t.value == t.intermediate_values[t.last_step]
    assert len([t for t in s.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 6


def test_diverged_and_raising_trials_fail_with_a_reason_and_the_sweep_goes_on(tmp_path: Path):
    """lr=1e6 blows the loss up: FAIL "diverged", never COMPLETE nor best, though its accuracy is
    a number (chance); lr=1e-7 merely fails to learn and stays COMPLETE."""
    sweep(
        tmp_path,
        "optimizer.lr=0.05,1e6,1e-7",
        "model.norm=batch,bogus",
        "trainer.max_epochs=2",
        "hydra.sweeper.max_failure_rate=0.9",
    )
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 2, "FAIL": 4}
    failed = {
        (t.params["optimizer.lr"], t.params["model.norm"]): t.user_attrs[FAIL_REASON]
        for t in s.trials
        if t.state == TrialState.FAIL
    }
    assert re.fullmatch(r"diverged: train/loss=(nan|inf) at epoch 0", failed[(1e6, "batch")])
    assert sum("model.norm" in r for r in failed.values()) == 3
    assert s.best_trial.params["optimizer.lr"] == 0.05


@pytest.mark.slow  # real processes, tens of seconds; make test-slow and CI run it
def test_joblib_launcher_runs_trials_in_parallel_processes(tmp_path: Path):
    sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        "pruner=median",
    )
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 2}
    assert all(t.intermediate_values for t in s.trials)  # reported from the worker processes


@pytest.mark.slow  # moved to slow to keep the default run under 3 minutes; CI runs it
def test_multi_objective_study_reports_a_pareto_front(tmp_path: Path):
    sweep(tmp_path, "sweeper=nsgaii", "hydra.sweeper.n_trials=3", "hydra.sweeper.plots=true")
    s = study(tmp_path)
    assert len(s.directions) == 2 and states(s) == {"COMPLETE": 3}
    assert all(len(t.values) == 2 for t in s.trials)
    assert (tmp_path / "sweep" / "plots" / "pareto_front.png").exists()
    assert "solutions" in (tmp_path / "sweep" / "optimization_results.yaml").read_text()


def test_literal_password_in_storage_is_refused(tmp_path: Path):
    result = sweep(tmp_path, ok=False, storage="postgresql://user:hunter2@127.0.0.1:1/db")
    assert result.returncode != 0 and "hydra.sweeper.storage" in result.stderr
    assert not any(
        "hunter2" in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file()
    )


def test_postgres_storage_with_the_password_from_the_environment(postgres, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_SWEEP_DB_PASSWORD", "sweep-secret")
    storage = postgres.replace("sweep-secret", "${oc.env:CIFAR_SWEEP_DB_PASSWORD}")
    sweep(tmp_path, "hydra.sweeper.n_trials=2", "pruner=median", storage=f"'{storage}'")
    s = study(tmp_path, storage=postgres)
    assert states(s) == {"COMPLETE": 2} and all(t.intermediate_values for t in s.trials)
    written = [p for p in (tmp_path / "sweep").rglob("*") if p.is_file()]
    assert written and not any("sweep-secret" in p.read_text(errors="ignore") for p in written)
