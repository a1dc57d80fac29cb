"""No host synchronisation per training step: the GPU never waits for Python between steps.

On a GPU, reading a tensor on the host (`.item()`, `bool(t)`, a printed or logged value) or an
op whose output size depends on the data (`nonzero`, `unique`, a boolean mask) waits for every
queued kernel; a tensor built from Python numbers (`torch.tensor([...], device=...)`) is a copy
from the host. This test counts such calls during training epochs of 4 and of 12 steps on the
CPU, with every augmentation on: the counts must be equal, so none happens per step.
(tests/test_gpu.py checks the same on a GPU with torch.cuda.set_sync_debug_mode.)
"""

from collections import Counter
from pathlib import Path

import lightning as L
import torch
from conftest import compose_cfg
from torch.overrides import TorchFunctionMode

from cifar_sweep.data.augment import OPS
from cifar_sweep.train import train

READS = {
    "item",
    "tolist",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "__format__",
    "numpy",
    "cpu",
    "nonzero",
    "argwhere",
    "unique",
    "unique_consecutive",
    "masked_select",
    "equal",
    "allclose",
    "tensor",  # from Python numbers: a copy from the host on a GPU
    "as_tensor",
    "from_numpy",
}
# every augmentation op, each with small values (the names must match augment.OPS)
EVERY_AUGMENTATION = {
    "crop": "{padding: 2}",
    "flip": "{p: 0.5}",
    "rotation": "{degrees: 10}",
    "translate": "{fraction: 0.1}",
    "zoom": "{low: 0.9, high: 1.1}",
    "cutout": "{size: 4}",
    "color_jitter": "{brightness: 0.2, contrast: 0.2, saturation: 0.2}",
}


class HostReads(TorchFunctionMode):
    """Counts calls that read a tensor on the host, by name, while `on` is set."""

    def __init__(self):
        super().__init__()
        self.on, self.calls = False, Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        masked = name == "__getitem__" and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in args[1:]
        )
        if self.on and (name in READS or masked):
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


class CountTrainingEpochs(L.Callback):
    def __init__(self, reads: HostReads):
        self.reads = reads

    def on_train_epoch_start(self, trainer, module):
        self.reads.on = True

    def on_train_epoch_end(self, trainer, module):
        self.reads.on = False


def host_reads(tmp_path: Path, steps: int, *extra: str) -> Counter:
    cfg = compose_cfg(
        f"trainer.limit_train_batches={steps}",
        "trainer.limit_val_batches=0",
        "trainer.progress_bar=true",
        "dataset.batch_size=16",
        *extra,
        tmp_path=tmp_path,
    )
    reads = HostReads()
    with reads:
        train(cfg, tmp_path / f"run{steps}", [CountTrainingEpochs(reads)])
    return reads.calls


def test_a_training_epoch_reads_nothing_on_the_host_per_step(tmp_path: Path):
    few, many = host_reads(tmp_path, 4), host_reads(tmp_path, 12)
    assert few == many, f"host reads that grow with the steps: {many - few}"


def test_no_augmentation_reads_or_copies_from_the_host_per_step(tmp_path: Path):
    assert set(EVERY_AUGMENTATION) == set(OPS)  # a new op joins this test
    every = [f"+dataset.augment.{op}={v}" for op, v in EVERY_AUGMENTATION.items()]
    few, many = host_reads(tmp_path, 4, *every), host_reads(tmp_path, 12, *every)
    assert few == many, f"host reads or copies that grow with the steps: {many - few}"
