"""k-fold cross-validation: every training image validates in exactly one fold and is never
trained on there; each fold is one run in its own folder; the test split stays untouched."""

from pathlib import Path

import pytest
import torch
from conftest import compose_cfg

from cifar_sweep import crossval
from cifar_sweep.data import sources
from cifar_sweep.data.datamodule import ImageDataModule
from cifar_sweep.errors import UserError


def identified(x: torch.Tensor, source: torch.Tensor) -> list[int]:
    """Which of the source's training images each image of `x` is, by its pixels."""
    index = {bytes(img.flatten().tolist()): i for i, img in enumerate(source)}
    assert len(index) == len(source), "the generated images must be distinct to be told apart"
    return [index[bytes(img.flatten().tolist())] for img in x]


@pytest.mark.parametrize("folds", [2, 5])
def test_each_training_image_validates_in_exactly_one_fold_and_is_not_trained_on_there(folds):
    # 104 images: 5 folds leave a remainder of 4, which validates too (folds of 21 and 20)
    cfg = compose_cfg("dataset.train_per_class=26", f"dataset.folds={folds}").dataset
    data = sources.load(cfg)
    n = len(data.train_x)
    validated = []
    for fold in range(folds):
        dm = ImageDataModule(cfg, seed=0, channels_last=False, fold=fold)
        dm.setup()
        (train_x, train_y), (val_x, val_y) = dm.splits["train"], dm.splits["val"]
        train, val = identified(train_x, data.train_x), identified(val_x, data.train_x)
        assert not set(train) & set(val), f"fold {fold} trains on its own validation images"
        assert sorted(train + val) == list(range(n))  # each image once, in one or the other
        assert len(val) in (n // folds, n // folds + 1)
        assert torch.equal(train_y, data.train_y[train]) and torch.equal(val_y, data.train_y[val])
        assert torch.equal(dm.splits["test"][0], data.test_x)
        validated += val
    assert sorted(validated) == list(range(n))  # the folds: disjoint, and together all of them


def test_more_folds_than_training_images_is_refused_naming_the_key():
    cfg = compose_cfg("dataset.train_per_class=2", "dataset.folds=9").dataset  # 8 images
    with pytest.raises(UserError, match="dataset.folds=9 is more than the 8 training images"):
        ImageDataModule(cfg, seed=0, channels_last=False, fold=0).setup()


def test_cross_validation_trains_each_fold_once_in_its_own_folder(tmp_path: Path, monkeypatch):
    runs = []

    def train(cfg, out_dir, callbacks, *, evaluate, test, fold):  # records, trains nothing
        runs.append((fold, out_dir))
        out_dir.mkdir(parents=True)
        return {"val/acc_best": 0.5 + fold / 10, "epochs": 1}

    monkeypatch.setattr(crossval, "train", train)
    metrics = crossval.cross_validate(compose_cfg("dataset.folds=3"), tmp_path / "cv")
    assert runs == [(i, tmp_path / "cv" / f"fold{i}") for i in range(3)]
    assert metrics["cv/folds"] == 3 and metrics["val/acc_best"] == pytest.approx(0.6)
