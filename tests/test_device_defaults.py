"""GPU defaults that hold on every GPU, checked on the CPU where the CPU can show them (the GPU
itself: tests/test_gpu.py, `pytest -m gpu`)."""

from pathlib import Path

import pytest
import torch
from conftest import compose_cfg

from cifar_sweep.train import build_trainer, device_defaults, train


def test_a_gpu_that_only_emulates_bf16_gets_16_mixed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = compose_cfg("trainer.accelerator=gpu")
    # a V100 or T4: bf16 counts as supported only when emulation counts
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )
    assert device_defaults(gpu).trainer.precision == "16-mixed"
    # an A100 or newer: native bf16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert device_defaults(gpu).trainer.precision == "bf16-mixed"


@pytest.mark.parametrize(("deterministic", "benchmark"), [("false", True), ("true", False)])
def test_cudnn_benchmark_is_on_unless_the_run_must_be_deterministic(
    deterministic: str, benchmark: bool, tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not benchmark)  # restored afterwards
    cfg = device_defaults(compose_cfg(f"trainer.deterministic={deterministic}"))
    build_trainer(cfg, tmp_path, [])
    assert torch.backends.cudnn.benchmark is benchmark


def test_a_compiled_run_compiles_once_for_training_and_once_for_evaluation(
    tmp_path: Path, monkeypatch
):
    """Training batches of 48 (the last, of 32, dropped), evaluation batches of 48 and 32: one
    graph for training and one for every evaluation batch size. Dynamo's "eager" backend traces
    and guards as the default one does, in seconds."""
    from torch._dynamo.utils import counters

    from cifar_sweep.instantiate import build

    plain_compile = torch.nn.Module.compile
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, **kw: plain_compile(self, backend="eager")
    )
    torch._dynamo.reset()
    counters.clear()
    cfg = compose_cfg(
        "model=tiny_cnn",
        "model.channels=[8,16,16]",
        "model.hidden=32",
        "trainer.compile=true",
        "trainer.max_epochs=2",
        "dataset.val_size=80",  # 320 training images: 6 x 48 + 32
        "dataset.batch_size=48",
        "dataset.eval_batch_size=48",  # 80 validation and 80 test images: 48 + 32
        "dataset.test_per_class=20",
        tmp_path=tmp_path,
    )
    metrics = train(cfg, tmp_path / "run")
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    assert metrics["epochs"] == 2
    # its checkpoint loads into the plain model: no `_orig_mod.` keys
    [ckpt] = (tmp_path / "run" / "checkpoints").glob("epoch=*.ckpt")  # the best (beside last.ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model = build(cfg.model, num_classes=4, in_channels=3)
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    )
