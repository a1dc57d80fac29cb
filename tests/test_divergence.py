"""A diverged run fails, whichever loss shows it, on data shaped unlike the generated set.

The data: 8 classes of 20x20 grayscale PNGs (the generated set is 4 classes of 3x16x16). At a
constant SGD rate of 10 this tree gives a finite training loss (about 47) and a NaN validation
loss in its first epoch, which used to be a COMPLETE trial with chance accuracy.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cfg, run_cli, states, study, sweep
from PIL import Image

from cifar_sweep.errors import UserError
from cifar_sweep.sweep import contract
from cifar_sweep.train import train

BLOWS_UP = ["scheduler=constant", "optimizer.lr=10", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def gray_tree(tmp_path_factory) -> Path:
    """8 classes of 20x20 grayscale PNGs, 40 training and 10 test images each."""
    root = tmp_path_factory.mktemp("gray")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 10)):
        for k in range(8):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = 30.0 * k + rng.normal(0, 20, (20, 20))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def on_tree(tree: Path, tmp_path: Path, *overrides: str) -> list[str]:
    return [
        "dataset=image_folder",
        f"dataset.root={tree}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        *overrides,
    ]


@pytest.mark.slow  # about 12 s; CI runs it
def test_a_nan_validation_loss_fails_the_run_though_the_training_loss_is_finite(
    gray_tree: Path, tmp_path: Path
):
    args = on_tree(gray_tree, tmp_path, *BLOWS_UP)
    result = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert re.search(r"^error: diverged: val/loss=nan at epoch 0$", result.stderr, re.M)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
    # the same run with the rule off: what the rule saw
    off = run_cli(*args, "trainer.stop_on_nonfinite=false", f"hydra.run.dir={tmp_path / 'off'}")
    assert off.returncode == 0, off.stderr[-2000:]
    metrics = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert math.isfinite(metrics["train/loss"]) and metrics["train/loss"] < 1e4
    assert math.isnan(metrics["val/loss"]) and metrics["val/acc"] <= 0.2  # 8 classes: chance


def test_in_a_sweep_the_diverged_trial_fails_with_its_reason_and_is_never_best(
    gray_tree: Path, tmp_path: Path
):
    args = on_tree(gray_tree, tmp_path, "scheduler=constant", "optimizer.lr=0.05,10")
    sweep(tmp_path, *args)
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 1, "FAIL": 1}
    [failed] = [t for t in s.trials if t.state.name == "FAIL"]
    assert failed.params["optimizer.lr"] == 10
    assert failed.user_attrs[contract.FAIL_REASON] == "diverged: val/loss=nan at epoch 0"
    assert contract.classify(failed) == contract.DIVERGED  # charged to the failure budget
    assert s.best_trial.params["optimizer.lr"] == 0.05


def test_a_finite_training_loss_above_max_loss_is_diverged(gray_tree: Path, tmp_path: Path):
    over = on_tree(gray_tree, tmp_path, "scheduler=constant", "optimizer.lr=1e4")
    with pytest.raises(UserError, match=r"^diverged: train/loss=\d\.\d+e\+\d+ at epoch 0$"):
        train(compose_cfg(*over, "trainer.max_epochs=1"), tmp_path / "run")
    # without the limit the NaN validation loss still ends it
    with pytest.raises(UserError, match=r"^diverged: val/loss=nan at epoch 0$"):
        train(compose_cfg(*over, "trainer.max_epochs=1", "trainer.max_loss=null"), tmp_path / "r")


@pytest.mark.slow  # moved to slow to keep the default run under 3 minutes; CI runs it
def test_the_last_check_fails_a_nan_test_loss_in_a_repeated_run_without_validation(
    gray_tree: Path, tmp_path: Path
):
    """Nothing validates (val_size=0, as a retrain does): the test loss is the one that shows it."""
    args = on_tree(
        gray_tree,
        tmp_path,
        "scheduler=constant",
        "optimizer.lr=100",
        "trainer.max_epochs=1",
        "trainer.max_loss=1e6",  # its training loss, about 6e4, stays under this limit
        "dataset.val_size=0",
        "repeats=2",
        "objective=test/acc",  # nothing validates, so the run returns its test accuracy
    )
    result = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert re.search(r"^error: diverged: test/loss=nan at epoch 0$", result.stderr, re.M)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_a_bad_max_loss_is_refused_naming_the_key(value: str, tmp_path: Path):
    with pytest.raises(UserError, match=rf"^trainer\.max_loss={value} must be null or a number"):
        train(compose_cfg(f"trainer.max_loss={value}", tmp_path=tmp_path), tmp_path / "run")
    assert not (tmp_path / "cache").exists()  # refused before the data was read
