"""Quiet: a short run and a short NAS sweep print none of the warnings a user cannot act on."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, sweep_cmd, tiny

pytestmark = pytest.mark.slow  # a compiled run and a NAS sweep, about 25 s: CI runs them

UNACTIONABLE = {
    "Lightning's doubt about a deliberate per-epoch OneCycleLR": "is using 'interval': 'epoch'",
    "cpp_extension's CUDA toolkit notice on a CPU": "No CUDA runtime is found",
    "Optuna's scratch study of a define-by-run space": "A new study created in memory",
}


@pytest.fixture(scope="module")
def run_output(tmp_path_factory) -> str:
    """A compiled one-epoch run with a per-epoch OneCycleLR, a CUDA toolkit named and no GPU."""
    tmp = tmp_path_factory.mktemp("run")
    args = [
        "model=tiny_cnn",
        "trainer.compile=true",
        "scheduler=onecycle",
        "scheduler.interval=epoch",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp / 'run'}",
        f"dataset.cache_dir={tmp / 'cache'}",
    ]
    env = {**os.environ, "CUDA_HOME": str(tmp)}  # a toolkit found, as where one is installed
    cmd = [sys.executable, "-m", "cifar_sweep", *tiny(args)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr  # Hydra logs to stdout, warnings go to stderr


@pytest.fixture(scope="module")
def sweep_output(tmp_path_factory) -> str:
    """Two trials of the NAS space (per-layer channels and kernels, categorical)."""
    tmp = tmp_path_factory.mktemp("sweep")
    nas = ["model=nas_cnn", "search_space=nas", "optimizer=adam", "hydra.sweeper.n_trials=2"]
    cmd = sweep_cmd(tmp, *nas, "trainer.limit_train_batches=2")
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr  # Hydra logs to stdout, warnings go to stderr


@pytest.mark.parametrize("phrase", UNACTIONABLE.values(), ids=UNACTIONABLE.keys())
def test_a_short_run_and_a_short_sweep_print_no_unactionable_warning(
    run_output: str, sweep_output: str, phrase: str
):
    assert phrase not in run_output + sweep_output


def test_a_short_nas_sweep_prints_no_categorical_units_notice(sweep_output: str):
    assert "categorical units" not in sweep_output
