"""Splits larger than the device's budget: kept in host memory with `dataset.placement=auto`,
refused in one line with `device`; a bad placement is named before anything loads."""

import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_cfg, run_cli

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
