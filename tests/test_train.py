"""Whole runs on small data: what a user sees in the run folder."""

import json
import math
import re
import statistics
from pathlib import Path

import pytest
from conftest import compose_cfg, run_in_process
from omegaconf import OmegaConf

from cifar_sweep.data import sources
from cifar_sweep.errors import UserError
from cifar_sweep.train import objective, train


def test_run_learns_the_generated_set_and_writes_its_outputs(tmp_path: Path):
    cfg = compose_cfg("trainer.max_epochs=4", "optimizer.lr=0.05", tmp_path=tmp_path)
    metrics = train(cfg, tmp_path / "run")
    # 4 classes: chance is 0.25; 100 test images put 0.6 eight standard errors above chance
    assert metrics["test/acc"] > 0.6
    assert metrics["val/acc_best"] >= metrics["val/acc"] > 0.6
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "lr",
        "time/epoch_s",
        "time/images_per_s",
        "model/params",
        "model/flops",
        "test/loss",
    ):
        assert key in metrics, key
    assert metrics["model/flops"] > metrics["model/params"] > 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    assert list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_tensorboard_holds_the_scalars_and_the_hparams(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_cfg("trainer.max_epochs=1", tmp_path=tmp_path)
    train(cfg, tmp_path / "run")
    tags, hparams = set(), set()
    for f in (tmp_path / "run" / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
        try:
            hparams |= set(acc.PluginTagToContent("hparams"))
        except KeyError:  # the file holds no hparams summary
            pass
    assert {"val/acc", "val/acc_best", "train/loss", "time/epoch_s", "test/acc"} <= tags
    assert "_hparams_/session_start_info" in hparams  # what the HParams tab reads


def test_missing_objective_lists_the_available_metrics():
    with pytest.raises(UserError, match=r"objective='val/f1'.*val/acc"):
        objective({"val/acc": 0.5}, "val/f1")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_objective_is_a_failed_run(value):
    with pytest.raises(UserError, match="diverged"):
        objective({"val/loss": value}, "val/loss")


def test_jpeg_folder_trains_and_its_cache_is_reused(jpeg_subset: Path, tmp_path: Path):
    overrides = [
        "dataset=cifar10_folder",
        f"dataset.root={jpeg_subset}",
        "dataset.val_size=40",
        "trainer.max_epochs=1",
    ]
    cfg = compose_cfg(*overrides, tmp_path=tmp_path)
    metrics = train(cfg, tmp_path / "run1")
    assert metrics["epochs"] == 1 and 0 <= metrics["test/acc"] <= 1
    [cache] = (tmp_path / "cache").glob("*.pt")
    stamp = cache.stat().st_mtime_ns
    data = sources.load(cfg.dataset)  # as the next run loads it
    assert data.train_x.shape == (200, 3, 32, 32) and data.test_x.shape == (50, 3, 32, 32)
    assert data.classes[0] == "airplane" and data.classes[-1] == "truck"
    assert cache.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    # a changed file makes a new cache: test_data.py's edited and added images, on the same tree


def test_k_fold_objective_is_the_mean_over_folds(tmp_path: Path):
    from cifar_sweep.crossval import cross_validate

    cfg = compose_cfg("dataset.folds=3", "trainer.max_epochs=1", tmp_path=tmp_path)
    before = OmegaConf.to_yaml(cfg)
    metrics = cross_validate(cfg, tmp_path / "cv")
    assert OmegaConf.to_yaml(cfg) == before  # the caller's config is untouched
    folds = [
        json.loads((tmp_path / "cv" / f"fold{i}" / "metrics.json").read_text()) for i in range(3)
    ]
    assert metrics["cv/folds"] == 3
    assert metrics["val/acc_best"] == pytest.approx(sum(f["val/acc_best"] for f in folds) / 3)
    assert json.loads((tmp_path / "cv" / "metrics.json").read_text()) == metrics


def test_training_on_train_and_validation_runs_no_validation(tmp_path: Path, recwarn):
    """A retrain on train+validation (val_size=0) keeps the last epoch and validates nothing."""
    metrics = train(compose_cfg("dataset.val_size=0", tmp_path=tmp_path), tmp_path / "run")
    assert "test/acc" in metrics and not any(k.startswith("val/") for k in metrics)
    assert not [w for w in recwarn if "Total length" in str(w.message)], [
        str(w.message) for w in recwarn
    ]


def test_a_learning_rate_that_blows_the_loss_up_ends_the_run_as_diverged(tmp_path: Path):
    cfg = compose_cfg("optimizer.lr=1e6", "trainer.max_epochs=3", tmp_path=tmp_path)
    with pytest.raises(UserError, match=r"^diverged: train/loss=(nan|inf) at epoch 0$"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()  # no results for a diverged run
    # the same run with the check off trains on to the end: loss not finite, accuracy a number
    cfg = compose_cfg(
        "optimizer.lr=1e6",
        "trainer.max_epochs=3",
        "trainer.stop_on_nonfinite=false",
        tmp_path=tmp_path,
    )
    metrics = train(cfg, tmp_path / "off")
    assert metrics["epochs"] == 3 and not math.isfinite(metrics["train/loss"])


def test_a_diverged_single_run_exits_non_zero_with_one_line(tmp_path: Path):
    result = run_in_process(
        "optimizer.lr=1e6",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    )
    assert result.returncode != 0
    assert re.search(r"^error: diverged: train/loss=(nan|inf) at epoch 0$", result.stderr, re.M)
    assert "Traceback" not in result.stderr


def test_seed_repeats_write_each_seed_and_the_mean_and_std(tmp_path: Path):
    from cifar_sweep.__main__ import fit

    cfg = compose_cfg("repeats=3", "seed=5", "trainer.max_epochs=1", tmp_path=tmp_path)
    metrics = fit(cfg, tmp_path / "run", [], evaluate=False)
    runs = [
        json.loads((tmp_path / "run" / f"seed{s}" / "metrics.json").read_text()) for s in (5, 6, 7)
    ]
    accs = [r["val/acc_best"] for r in runs]
    assert metrics["val/acc_best"] == pytest.approx(statistics.fmean(accs))
    assert metrics["val/acc_best_std"] == pytest.approx(statistics.pstdev(accs))
    assert metrics["repeats"] == 3 and cfg.seed == 5  # the caller's config is untouched
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    assert len({r["train/loss"] for r in runs}) == 3  # three different seeds really ran
