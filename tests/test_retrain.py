"""python -m cifar_sweep.retrain: the study its overrides swept (not the newest of the name), the
config that ran saved, multi-objective studies and typos answered in one line, and Ctrl-C."""

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, ctrl_c_once_training, sweep_cmd
from omegaconf import OmegaConf

from cifar_sweep.checks import LOGGED
from cifar_sweep.errors import UserError
from cifar_sweep.retrain import check_retrain, chosen_trials, find_study

SHORT = ["trainer.limit_train_batches=2", "hydra.sweeper.n_trials=1"]


def retrain_cmd(swept: Path, out: Path, *args: str) -> list[str]:
    """The sweep's own overrides (so the same study), as `python -m cifar_sweep.retrain`."""
    sweep_args = sweep_cmd(swept, *SHORT)[4:]
    return [sys.executable, "-m", "cifar_sweep.retrain", *sweep_args, f"hydra.run.dir={out}", *args]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A one-trial sweep, then two decoys named like it: a newer multi-objective study and one
    that never started (each once crashed the retrain)."""
    tmp = tmp_path_factory.mktemp("swept")
    result = subprocess.run(sweep_cmd(tmp, *SHORT), cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{tmp / 'studies.db'}"
    optuna.create_study(study_name="default-never", storage=storage)
    decoy = optuna.create_study(
        study_name="default-zzzz", storage=storage, directions=["maximize", "minimize"]
    )
    decoy.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[0.9, 1.0]))
    return tmp


@pytest.mark.slow  # the swept fixture: a sweep of its own, about 20 s; CI runs it
def test_retrain_finds_the_swept_study_and_saves_the_config_that_ran(swept: Path):
    [name] = [n for n in optuna.get_all_study_names(f"sqlite:///{swept / 'studies.db'}")
              if n not in ("default-never", "default-zzzz")]  # fmt: skip
    trial = optuna.load_study(study_name=name, storage=f"sqlite:///{swept / 'studies.db'}").trials[
        0
    ]
    out = swept / "retrain"
    result = subprocess.run(
        retrain_cmd(swept, out, "retrain.epochs=2"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"retraining trial 0 of {name} (best)" in result.stdout
    assert "_execution_whitelist_" not in result.stderr
    assert re.search(rf"retrain done: best: test/acc=[0-9.]+; {out} holds", result.stdout)
    for saved in (out / ".hydra" / "config.yaml", out / "best" / ".hydra" / "config.yaml"):
        cfg = OmegaConf.load(saved)
        assert cfg.optimizer.lr == trial.params["optimizer.lr"]  # not the base config's 0.1
        assert cfg.trainer.max_epochs == 2 and cfg.dataset.val_size == 0
    assert json.loads((out / "best" / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow  # the swept fixture: a sweep of its own, about 20 s; CI runs it
def test_logged_lists_what_a_run_logs(swept: Path):
    """checks.LOGGED (what an objective may name) is what a trial's metrics.json holds, and the
    test set's figures, which trials leave to the final run (test_in_trials: false)."""
    logged = set(json.loads((swept / "sweep" / "0" / "metrics.json").read_text()))
    assert logged | {"test/acc", "test/loss"} == LOGGED - {"gpu/peak_mem_gb"}  # that: a GPU's


@pytest.mark.slow  # a real retrain process; Ctrl-C in a run: test_cli, the same handler
def test_ctrl_c_in_a_retrain_prints_one_line_and_exits_130(swept: Path):
    out = swept / "interrupted"
    cmd = retrain_cmd(swept, out, "retrain.epochs=1000")
    done = ctrl_c_once_training(cmd, out / "best" / "tb")
    assert done.returncode == 130, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        f"interrupted: the retrain stopped; {out} holds the runs written so far"
    ]
    assert "Traceback" not in done.stdout


@pytest.mark.slow  # three retrain processes
def test_a_killed_retrain_goes_on_from_its_last_epoch_and_a_finished_one_is_kept(swept: Path):
    """The same command again, after a kill at any moment: the run resumes in its folder, and
    once finished is kept as it is (the CPU campaign reruns its stages this way)."""
    out = swept / "killed"
    cmd = retrain_cmd(swept, out, "retrain.epochs=30")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "best" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert not (out / "best" / "metrics.json").exists(), "finished before the kill: test nothing"
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = re.search(r"going on from epoch (\d+)", again.stdout)
    assert resumed and int(resumed.group(1)) >= 1, again.stdout[-3000:]
    metrics = json.loads((out / "best" / "metrics.json").read_text())
    assert metrics["epochs"] == 30
    third = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"best: finished earlier in {out / 'best'}; kept" in third.stdout
    assert json.loads((out / "best" / "metrics.json").read_text()) == metrics


def sweeper(storage: str):
    return OmegaConf.create(
        {"storage": storage, "heartbeat_s": 60, "grace_s": 180, "db_outage_s": 60, "max_retry": 1}
    )


@pytest.mark.slow  # the swept fixture: a sweep of its own, about 20 s; CI runs it
def test_a_mistyped_study_gets_did_you_mean(swept: Path):
    with pytest.raises(UserError, match=r"retrain.study=default-zzzy: no such study in .*; did "):
        find_study(sweeper(f"sqlite:///{swept / 'studies.db'}"), "default-zzzy", "default", [])


def test_no_swept_study_and_several_of_the_name_asks_for_one(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    for name in ("default-a", "default-b"):
        optuna.create_study(study_name=name, storage=storage)
    from hydra import initialize_config_dir

    with (
        initialize_config_dir(str(ROOT / "conf")),
        pytest.raises(
            UserError, match=r"retrain.study: these overrides sweep study default-\w+, which is not"
        ),
    ):
        find_study(sweeper(storage), None, "default", ["dataset=synthetic"])


def retrain_cfg(**kw):
    return OmegaConf.create({"trial": None, "per": None, **kw})


def test_a_multi_objective_study_asks_for_a_trial_of_its_front():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.9, 2.0], [0.8, 1.0], [0.7, 3.0]):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=values))
    with pytest.raises(UserError, match=r"retrain.trial=N \(0: \[0.9, 2.0\]; 1: \[0.8, 1.0\]\)"):
        chosen_trials(study, retrain_cfg())
    assert chosen_trials(study, retrain_cfg(trial=1))["trial1"].number == 1
    with pytest.raises(UserError, match=r"retrain.trial=7: not a completed trial"):
        chosen_trials(study, retrain_cfg(trial=7))


def test_per_model_names_a_model_without_trials(caplog):
    study = optuna.create_study(direction="maximize")
    dist = {"model": optuna.distributions.CategoricalDistribution(["seq_cnn", "two_branch_cnn"])}
    study.add_trial(
        optuna.trial.create_trial(params={"model": "seq_cnn"}, distributions=dist, value=0.5)
    )
    with caplog.at_level(logging.WARNING):
        assert list(chosen_trials(study, retrain_cfg(per="model"))) == ["seq_cnn"]
    assert "model=two_branch_cnn has no completed trial; not retrained" in caplog.text
    with pytest.raises(
        UserError, match=r"retrain.per=modell: not a parameter .*did you mean model"
    ):
        chosen_trials(study, retrain_cfg(per="modell"))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", 0, "retrain.epochs=0 must be an integer >= 1"),
        ("epochs", 2.5, "retrain.epochs=2.5 must be an integer >= 1"),
        ("trial", -1, "retrain.trial=-1 must be null or a trial number"),
        ("merge_val", "yes", "retrain.merge_val=yes must be true or false"),
    ],
)
def test_the_retrain_keys_are_named_as_themselves(key, value, expected):
    retrain = OmegaConf.create({"epochs": 30, "trial": None, "merge_val": True, key: value})
    with pytest.raises(UserError, match=re.escape(expected)):
        check_retrain(retrain)
