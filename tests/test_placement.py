"""Splits larger than the device's budget: kept in host memory with `dataset.placement=auto`,
refused in one line with `device`; a bad placement is named before anything loads."""

import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_cfg, noise_tree, run_cli

from cifar_sweep.data import sources
from cifar_sweep.data.augment import build_augment
from cifar_sweep.data.batches import DeviceBatches
from cifar_sweep.data.datamodule import ImageDataModule
from cifar_sweep.train import train

# The generated set's splits take about 0.4 MB; this budget (about 10 kB) holds none of them.
SMALL_BUDGET = "dataset.device_budget_gb=0.00001"
RUN = ["model=tiny_cnn", "trainer.deterministic=true", "dataset.augment.flip.p=0.5"]


class WhereBatchesComeFrom(L.Callback):
    """Records whether the training batches are gathered on the host and copied over."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.copied_to = trainer.train_dataloader.device


def metrics(folder: Path) -> dict:
    found = json.loads((folder / "metrics.json").read_text())
    return {k: v for k, v in found.items() if not k.startswith("time/")}


def test_splits_over_the_budget_train_from_host_memory_to_the_same_result(tmp_path, caplog):
    on_device, on_host = WhereBatchesComeFrom(), WhereBatchesComeFrom()
    cfg = compose_cfg(*RUN, "dataset.placement=device", tmp_path=tmp_path)
    train(cfg, tmp_path / "device", [on_device])
    with caplog.at_level(logging.INFO):
        train(compose_cfg(*RUN, SMALL_BUDGET, tmp_path=tmp_path), tmp_path / "auto", [on_host])
    assert on_device.copied_to is None  # whole on the device
    assert on_host.copied_to == torch.device("cpu")  # each batch copied from host memory
    said = [r.getMessage() for r in caplog.records if "dataset.placement=host" in r.getMessage()]
    assert len(said) == 1, caplog.text  # one line, saying why
    assert "dataset.device_budget_gb=1e-05 is 0.00 GB" in said[0]
    # the same data order and augmentations: the same model, to the last digit
    assert metrics(tmp_path / "auto") == metrics(tmp_path / "device")


@pytest.mark.slow  # moved to slow to keep the default run under 3 minutes; CI runs it
def test_device_placement_that_cannot_fit_fails_in_one_line_naming_the_keys(tmp_path: Path):
    result = run_cli(
        "dataset.placement=device",
        SMALL_BUDGET,
        f"dataset.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: dataset.placement=device: the splits take 0.00 GB but ")
    assert "dataset.placement=auto (or host)" in line and "dataset.image_size" in line
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_placement_must_be_auto_device_or_host(tmp_path: Path):
    result = run_cli("dataset.placement=gpu", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert "error: dataset.placement=gpu must be auto, device or host" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned host memory needs CUDA")
def test_on_cuda_host_batches_are_pinned_and_train_as_well_as_device_ones(tmp_path: Path):
    gpu = ["trainer.accelerator=gpu", "trainer.deterministic=false", "trainer.precision=32"]
    seen = WhereBatchesComeFrom()
    pinned_before = torch.cuda.host_memory_stats().get("num_host_alloc", 0)
    host = train(compose_cfg(*RUN, *gpu, SMALL_BUDGET, tmp_path=tmp_path), tmp_path / "h", [seen])
    assert seen.copied_to.type == "cuda"
    assert torch.cuda.host_memory_stats().get("num_host_alloc", 0) > pinned_before
    device = train(compose_cfg(*RUN, *gpu, tmp_path=tmp_path), tmp_path / "d")
    assert host["test/acc"] > 0.5  # 4 classes: chance is 0.25
    assert abs(host["test/acc"] - device["test/acc"]) < 0.1


def mapped_from(path: Path) -> list[tuple[int, int]]:
    """The address ranges of this process's memory maps of `path`."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start, end = (int(a, 16) for a in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def cached_data(tmp_path: Path, *args: str) -> ImageDataModule:
    tree = noise_tree(tmp_path / "tree", size=8, per_class=(30, 5))
    cfg = compose_cfg(*RUN, "dataset=image_folder", f"dataset.root={tree}", "dataset.val_size=20",
                      "dataset.batch_size=16", *args, tmp_path=tmp_path).dataset  # fmt: skip
    sources.load(cfg)  # builds the cache; from here on it is read memory-mapped
    data = ImageDataModule(cfg, seed=0, channels_last=False)
    data.setup()
    return data


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc/self/maps")
def test_host_placement_draws_batches_from_the_cache_memory_map_without_a_copy(tmp_path: Path):
    data = cached_data(tmp_path, "dataset.placement=host")
    [cache] = (tmp_path / "cache").glob("*.pt")
    mapped = mapped_from(cache.resolve())
    assert mapped, "the cache is not memory-mapped"
    for batches in (data.train_dataloader(), data.val_dataloader()):
        for t in (batches.x, batches.y):
            at = t.untyped_storage().data_ptr()
            assert any(start <= at < end for start, end in mapped), "a copy of the split"


def epoch_batches(batches: DeviceBatches, epochs: int = 2) -> list[torch.Tensor]:
    return [t for _ in range(epochs) for xb, yb in batches for t in (xb, yb)]


def test_host_batches_are_those_of_the_splits_gathered_as_before(tmp_path: Path):
    """The same data order and augmentations as the device path, and as DeviceBatches over the
    splits gathered into tensors of their own (what host placement held before)."""
    host = cached_data(tmp_path, "dataset.placement=host", "dataset.augment.flip.p=0.5")
    device = ImageDataModule(host.cfg.copy(), seed=0, channels_last=False)
    device.cfg.placement = "device"
    device.setup()
    for split, training in (("train", True), ("val", False)):
        rows = host.rows[split]
        gathered = DeviceBatches(
            host.data.train_x[rows],
            host.data.train_y[rows],
            batch_size=16 if training else host.cfg.eval_batch_size,
            mean=torch.tensor(host.mean),
            std=torch.tensor(host.std),
            augment=build_augment(host.cfg.augment) if training else None,
            shuffle=training,
            seed=0,
            channels_last=False,
        )
        load = host.train_dataloader if training else host.val_dataloader
        on_device = device.train_dataloader if training else device.val_dataloader
        expected = epoch_batches(gathered)
        for got in (epoch_batches(load()), epoch_batches(on_device())):
            assert len(got) == len(expected)
            assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
