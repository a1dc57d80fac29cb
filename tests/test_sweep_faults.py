"""Small faults of a sweep, each as a user meets it on the command line."""

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, study, sweep, sweep_cmd

TINY_MODEL = ("model=tiny_cnn", "model.channels=[8]", "model.hidden=16")


@pytest.mark.parametrize(
    "args, said",
    [
        (
            ["hydra.sweeper.devices=[0,1,2]"],
            "hydra.sweeper.devices=[0, 1, 2]: 3 GPU(s) do not make groups of trainer.devices=2",
        ),
        (
            ["hydra.sweeper.devices=[[0,1],[2]]"],
            "hydra.sweeper.devices: the group [2] has 1 device(s), but each trial trains on "
            "trainer.devices=2",
        ),
        (["hydra.sweeper.n_jobs=2"], "hydra.sweeper.n_jobs=2 with trainer.devices=2: a trial on"),
        (["trainer.strategy=ddp_spawn"], "trainer.strategy=ddp_spawn with trainer.devices=2:"),
        (["trainer.devices=1,2"], "trainer.devices cannot be swept"),
    ],
)
def test_a_sweep_of_trials_on_two_devices_that_cannot_run_is_refused_in_one_line(
    tmp_path: Path, args: list[str], said: str
):
    result = sweep(tmp_path, "trainer.devices=2", "trainer.accelerator=cpu", *args, ok=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {said}")
    assert not (tmp_path / "studies.db").exists()  # refused before the study was opened


def test_a_submitit_launcher_with_two_devices_per_trial_points_to_the_array_script(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]'")
    args = ("trainer.devices=2", "trainer.accelerator=cpu", "hydra/launcher=submitit_slurm")
    result = sweep(tmp_path, *args, ok=False)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: hydra/launcher=submitit_slurm with trainer.devices=2: ")
    assert "examples/slurm/sweep.sbatch" in line


@pytest.mark.slow  # real worker processes, about 10 s; CI runs it
def test_a_worker_device_outside_cuda_visible_devices_is_refused_in_one_line(tmp_path: Path):
    args = ("hydra.sweeper.workers=2", "hydra.sweeper.devices=[0,1]", *TINY_MODEL)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}  # one device given; index 1 is not one
    result = subprocess.run(
        sweep_cmd(tmp_path, *args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "hydra.sweeper.devices: 1 is not a device here" in result.stderr.splitlines()[-1]
    assert not study(tmp_path).trials  # no worker started


def test_pruner_null_means_no_pruning(tmp_path: Path):
    result = sweep(tmp_path, "hydra.sweeper.pruner=null", "hydra.sweeper.n_trials=1", *TINY_MODEL)
    assert ", NopPruner, " in result.stdout  # the study's header line
    assert ", MedianPruner, " not in result.stdout


def test_a_grid_sweep_ends_without_matplotlib_notes(tmp_path: Path):
    plots = "hydra.sweeper.plots=true"
    result = sweep(tmp_path, "model.hidden=16,32", "model=tiny_cnn", "model.channels=[8]", plots)
    assert "categorical units" not in result.stdout + result.stderr
    assert (tmp_path / "sweep" / "plots" / "slice.png").stat().st_size > 1000  # still drawn


def test_a_sweep_whose_dataset_cannot_be_had_stops_before_its_study_in_one_line(
    tmp_path: Path, monkeypatch
):
    """The mission's own command on a machine without a network: no trial starts."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # offline
    offline = ("dataset=cifar10", f"dataset.root={tmp_path / 'cifar10'}", "model=resnet18")
    result = sweep(tmp_path, *offline, ok=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: dataset.root={tmp_path / 'cifar10'}: could not download")
    for way in ("dataset=cifar10_folder", "CIFAR10_JPEG=", "the network"):
        assert way in line
    assert not (tmp_path / "studies.db").exists()  # refused before the study was opened
    assert "sweep done" not in result.stdout and "next:" not in result.stdout
