"""What a sweep tells its user: each failed trial in one line with its reason, a cause shared by
the failures named (a data error stops at the first trial), a queued point that will wait, a
copied best, a GPU that is not there."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, study, sweep, sweep_cmd, wait_for
from PIL import Image

from cifar_sweep.sweep.contract import WARM_START


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_a_diverged_trial_prints_its_reason_on_its_progress_line(tmp_path: Path):
    result = sweep(tmp_path, "optimizer.lr=1e6,0.05", "hydra.sweeper.max_failure_rate=0.9")
    assert re.search(r"trial \d \(\d/2\)  fail  diverged: \S+=(nan|inf) at epoch 0", out(result))


@pytest.mark.slow  # a real Ctrl-C mid-trial, about 8 s; CI runs it
def test_an_interrupted_trial_prints_its_line_too(tmp_path: Path):
    proc = subprocess.Popen(
        sweep_cmd(tmp_path, "optimizer.lr=0.01,0.02", "trainer.max_epochs=20"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        start_new_session=True,
    )
    wait_for(tmp_path, done=0, running=1)
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGINT)
    text, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, text[-3000:]  # as shells expect of Ctrl-C
    assert re.search(r"trial 0 \(0/2\)  fail  interrupted: its point runs first next time", text)
    assert text.strip().splitlines()[-1] == (
        "interrupted: running trials are queued to run first next time"
    )
    assert "sweep done" not in text and "next:" not in text


def test_failures_with_one_cause_name_it_when_they_stop_the_sweep(tmp_path: Path):
    result = sweep(
        tmp_path,
        "optimizer.lr=1e6,2e6,3e6",  # each diverges in its first epoch, past the dry build
        "hydra.sweeper.max_failure_rate=0.5",
        ok=False,
    )
    assert result.returncode != 0
    assert re.search(r"2 failed trials exceed .*; all 2 failed with: diverged", result.stderr)


def mixed_sizes_tree(root: Path) -> Path:
    """train/ and test/ with two classes, one image 20x20 among 16x16 ones."""
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(8):
                size = 20 if (split, c, i) == ("train", "b", 7) else 16
                Image.new("RGB", (size, size), (40 * i, 0, 0)).save(root / split / c / f"{i}.png")
    return root


def test_a_data_error_stops_the_sweep_at_its_first_trial_naming_it(tmp_path: Path):
    root = mixed_sizes_tree(tmp_path / "tree")
    result = sweep(
        tmp_path,
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.val_size=4",
        "optimizer.lr=0.01,0.02,0.03",
        "hydra.sweeper.max_failure_rate=1.0",
        ok=False,
    )
    assert result.returncode != 0
    assert "trial 0 failed on its data" in result.stderr
    assert "sweep done" not in result.stdout and "next:" not in result.stdout
    assert "is 20x20 but" in result.stderr and "dataset.image_size" in result.stderr
    assert len(study(tmp_path).trials) == 1  # not one trial after another


def test_a_queued_point_of_a_full_study_says_it_waits(tmp_path: Path):
    space = "optimizer.lr=interval(0.01, 0.1)"
    sweep(tmp_path, space, "hydra.sweeper.n_trials=1")
    result = sweep(
        tmp_path, space, "hydra.sweeper.n_trials=1", "hydra.sweeper.enqueue=[{optimizer.lr: 0.05}]"
    )
    assert "enqueue[0]={'optimizer.lr': 0.05} waits: the study already holds" in out(result)


@pytest.mark.slow  # moved to slow to keep the default run under 3 minutes; CI runs it
def test_a_best_trial_copied_by_a_warm_start_says_so(tmp_path: Path):
    space = "optimizer.lr=interval(0.04, 0.06)"
    sweep(tmp_path, space, "hydra.sweeper.n_trials=1", "trainer.max_epochs=2", "name=first")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    [first] = optuna.get_all_study_names(url)
    result = sweep(  # one training batch: no better than chance, so the copy stays the best
        tmp_path,
        space,
        "hydra.sweeper.n_trials=1",
        "trainer.limit_train_batches=1",
        "name=second",
        f"hydra.sweeper.warm_start={first}",
        f"hydra.sweep.dir={tmp_path / 'second'}",
    )
    second = next(n for n in optuna.get_all_study_names(url) if n.startswith("second-"))
    best = optuna.load_study(study_name=second, storage=url).best_trial
    assert WARM_START in best.user_attrs  # the premise: the copy is the best
    assert f"copied from {first}#0 by the warm start" in result.stdout
    assert re.search(r"sweep done: best val/acc_best=\S+ \(trial 0, copied from", result.stdout)


def test_a_gpu_device_on_a_machine_without_one_is_named_a_label(tmp_path: Path):
    import torch

    result = sweep(
        tmp_path, "optimizer.lr=0.01,0.02", "hydra.sweeper.devices=[0]", "hydra.sweeper.n_trials=1"
    )
    said = "hydra.sweeper.devices=[0]: no CUDA GPU is visible" in out(result)
    assert said != torch.cuda.is_available()
