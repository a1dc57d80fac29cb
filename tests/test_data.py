"""A user's own image tree: its size and channels, its mean and std, and its cache."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, run_cli, run_in_process
from PIL import Image

from cifar_sweep.data import sources
from cifar_sweep.data.datamodule import ImageDataModule
from cifar_sweep.data.tree import hold, release
from cifar_sweep.errors import UserError


def banded_tree(root: Path, *, per_class: int, test_per_class: int, side: int = 28) -> Path:
    """Grayscale side x side PNGs: class k is a bright band in the k-th quarter of the rows, over
    noise (learnable at a glance); plus two files that are not images."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for k in range(4):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.normal(60, 30, (side, side))
                pixels[k * side // 4 : (k + 1) * side // 4] += 120
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    (root / "train" / "class0" / "notes.txt").write_text("not an image")
    (root / "test" / "class1" / ".DS_Store").write_bytes(b"\0")
    return root


def folder_cfg(root: Path, tmp_path: Path, *overrides: str):
    return compose_cfg(
        "dataset=image_folder", f"dataset.root={root}", *overrides, tmp_path=tmp_path
    ).dataset


def test_own_grayscale_tree_trains_with_only_its_root(tmp_path: Path):
    tree = banded_tree(tmp_path / "tree", per_class=100, test_per_class=10)
    result = run_in_process(
        "dataset=image_folder",
        f"dataset.root={tree}",
        "trainer.max_epochs=4",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # one channel of 28x28, a tenth of the 400 training images validates, mean/std measured
    assert "4 classes, 360 training, 40 validation, 40 test images of 1x28x28" in result.stdout
    assert "(the training images' own, measured)" in result.stdout
    assert "skipped 2 files that are not images" in result.stdout
    run = tmp_path / "run"
    for report in ("metrics.json", "evaluation.json", "classification_report.md"):
        assert (run / report).exists(), report
    assert (run / "confusion_matrix.png").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.5  # 4 classes: chance is 0.25
    assert "class3" in (run / "classification_report.md").read_text()


def test_mean_and_std_are_measured_per_channel_and_stored_in_the_cache(tmp_path: Path):
    tree = banded_tree(tmp_path / "tree", per_class=5, test_per_class=2)
    cfg = folder_cfg(tree, tmp_path)
    data = sources.load(cfg)
    pixels = np.stack([np.asarray(Image.open(p)) for p in sorted(tree.glob("train/*/*.png"))])
    assert data.mean == pytest.approx([pixels.mean() / 255], abs=1e-6)
    assert data.std == pytest.approx([pixels.std() / 255], abs=1e-6)
    [cache] = (tmp_path / "cache").glob("*.pt")
    assert torch.load(cache)["mean"] == data.mean
    dm = ImageDataModule(cfg, seed=0, channels_last=False)
    dm.setup()
    assert (dm.mean, dm.std) == (data.mean, data.std)
    assert len(dm.splits["val"][0]) == 2  # val_size 0.1 of 20


def test_val_size_is_a_count_or_a_fraction(tmp_path: Path):
    for val_size, count in (("0.25", 100), ("30", 30)):
        cfg = compose_cfg(f"dataset.val_size={val_size}").dataset  # 400 generated images
        dm = ImageDataModule(cfg, seed=0, channels_last=False)
        dm.setup()
        assert len(dm.splits["val"][0]) == count
        assert len(dm.splits["train"][0]) == 400 - count


def test_rgba_images_lose_their_alpha_and_rgb_keeps_three_channels(tmp_path: Path):
    rng = np.random.default_rng(1)
    rgba = {}
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
                path = tmp_path / "tree" / split / c / f"{i}.png"
                Image.fromarray(pixels, mode="RGBA").save(path)
                rgba[str(path)] = pixels
    data = sources.load(folder_cfg(tmp_path / "tree", tmp_path))
    assert data.train_x.shape == (6, 3, 8, 8)
    first = rgba[str(tmp_path / "tree" / "train" / "a" / "0.png")]
    assert torch.equal(data.train_x[0], torch.from_numpy(first[..., :3]).permute(2, 0, 1))
    assert len(data.mean) == 3


def test_mixed_sizes_are_resized_or_named(tmp_path: Path):
    for c, side in (("a", 10), ("b", 12)):
        for split in ("train", "test"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            Image.new("L", (side, side), 128).save(tmp_path / "tree" / split / c / "0.png")
    first, other = (tmp_path / "tree" / "train" / c / "0.png" for c in ("a", "b"))
    named = rf"{other} is 12x12 but {first} is 10x10: set dataset.image_size="
    with pytest.raises(UserError, match=named):
        sources.load(folder_cfg(tmp_path / "tree", tmp_path))
    data = sources.load(folder_cfg(tmp_path / "tree", tmp_path, "dataset.image_size=16"))
    assert data.train_x.shape == (2, 1, 16, 16) and data.test_x.shape == (2, 1, 16, 16)


def test_cache_is_reused_and_rebuilt_when_an_image_is_edited_or_added(tmp_path: Path):
    tree = banded_tree(tmp_path / "tree", per_class=3, test_per_class=1)
    cfg = folder_cfg(tree, tmp_path)
    sources.load(cfg)
    [cache] = (tmp_path / "cache").glob("*.pt")
    stamp = cache.stat().st_mtime_ns
    sources.load(cfg)
    assert list((tmp_path / "cache").glob("*.pt")) == [cache]
    assert cache.stat().st_mtime_ns == stamp  # read, not written again
    # an image edited in place (same name, same folder): a new cache with the new pixels
    edited = tree / "train" / "class2" / "0.png"
    Image.new("L", (28, 28), 255).save(edited)
    data = sources.load(cfg)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    index = sorted(str(p) for p in tree.glob("train/*/*.png")).index(str(edited))
    assert bool((data.train_x[index] == 255).all())
    # an image added: a third cache, one image more
    Image.new("L", (28, 28), 0).save(tree / "train" / "class1" / "new.png")
    assert len(sources.load(cfg).train_x) == 13
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    # only its modification time changed (same name, same size): a fourth
    mtime = edited.stat().st_mtime_ns + 10**9
    os.utime(edited, ns=(mtime, mtime))
    sources.load(cfg)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4


def test_truncated_cache_is_rebuilt_with_a_warning(tmp_path: Path, caplog):
    tree = banded_tree(tmp_path / "tree", per_class=3, test_per_class=1)
    cfg = folder_cfg(tree, tmp_path)
    first = sources.load(cfg)
    [cache] = (tmp_path / "cache").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # a disk that filled up
    with caplog.at_level(logging.WARNING):
        again = sources.load(cfg)
    assert "is unreadable" in caplog.text and "rebuilding it" in caplog.text
    assert torch.equal(again.train_x, first.train_x)
    assert torch.equal(sources.Splits(**torch.load(cache)).train_x, first.train_x)  # whole again


def test_empty_class_folder_is_named(tmp_path: Path):
    tree = banded_tree(tmp_path / "tree", per_class=2, test_per_class=1)
    for f in (tree / "test" / "class3").iterdir():
        os.remove(f)
    with pytest.raises(UserError, match=f"class folder {tree}/test/class3 holds no images"):
        sources.load(folder_cfg(tree, tmp_path))


def test_a_sweeps_held_tree_keeps_its_first_listing_until_released(tmp_path: Path):
    root = banded_tree(tmp_path / "tree", per_class=2, test_per_class=1)
    cfg = folder_cfg(root, tmp_path)
    hold()  # as a sweep does: its trials see the files as its first trial found them
    assert len(sources.load(cfg).train_x) == 8
    Image.new("L", (28, 28), 0).save(root / "train" / "class1" / "new.png")
    assert len(sources.load(cfg).train_x) == 8
    release()  # what comes after the sweep reads the tree again
    assert len(sources.load(cfg).train_x) == 9


def test_a_batch_larger_than_the_training_set_with_drop_last_is_one_line(tmp_path: Path):
    done = run_cli("dataset.batch_size=4096", "dataset.drop_last=true", f"hydra.run.dir={tmp_path}")

    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(
        "error: dataset.batch_size=4096 with dataset.drop_last=true leaves no training batch"
    )
    assert "Traceback" not in done.stdout + done.stderr
