"""Training images/s of the runner (Lightning) vs a bare PyTorch loop, same model, same data.

Both read the same device-resident batches (with the configured augmentation); the ratio is the
runner's overhead. Also times loading the cached dataset. Any config override works:

    python benchmarks/throughput.py                                  # CPU-sized defaults
    python benchmarks/throughput.py dataset=cifar10_folder trainer.precision=bf16-mixed
"""

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from cifar_sweep import sources
from cifar_sweep.data import DeviceBatches
from cifar_sweep.train import build, quiet_lightning, train

CPU_DEFAULTS = [
    "dataset=synthetic", "dataset.image_size=32", "dataset.train_per_class=400",
    "dataset.val_size=200", "dataset.num_classes=10", "model.width=16", "trainer.max_epochs=3",
    "trainer.progress_bar=false",
]  # fmt: skip


def bare_loop(cfg, device: torch.device) -> float:
    """images/s of the last of `trainer.max_epochs` epochs of a plain loop."""
    data = sources.load(cfg.dataset)
    x, y = data.train_x[cfg.dataset.val_size :].to(device), data.train_y[cfg.dataset.val_size :]
    from cifar_sweep.augment import build_augment

    batches = DeviceBatches(
        x, y.to(device), batch_size=cfg.dataset.batch_size,
        mean=torch.tensor(list(cfg.dataset.mean), device=device),
        std=torch.tensor(list(cfg.dataset.std), device=device),
        augment=build_augment(cfg.dataset.augment), shuffle=True, seed=cfg.seed,
        channels_last=cfg.trainer.channels_last,
    )  # fmt: skip
    model = build(cfg.model, num_classes=len(data.classes), in_channels=x.shape[1]).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        model = torch.compile(model)
    optimizer = build(cfg.optimizer)(params=model.parameters())
    bf16 = cfg.trainer.precision == "bf16-mixed"
    for _ in range(cfg.trainer.max_epochs):
        t0, images = time.perf_counter(), 0
        for xb, yb in batches:
            ctx = torch.autocast(device.type, torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx:
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(yb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
    return images / elapsed


def main(overrides: list[str]) -> None:
    quiet_lightning()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf)):
        cfg = compose("config", overrides=[*CPU_DEFAULTS, *overrides])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sources.load(cfg.dataset)  # build the cache once, outside the timings
    t0 = time.perf_counter()
    sources.load(cfg.dataset)
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        runner = train(cfg, Path(out))["time/images_per_s"]  # last epoch's training images/s
    bare = bare_loop(cfg, device)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"overrides: {' '.join([*CPU_DEFAULTS, *overrides])}")
    kind = "generated in memory" if cfg.dataset.source == "synthetic" else "from the cache file"
    print(f"dataset load ({kind}): {load_s:.3f} s")
    print(f"runner (Lightning): {runner:10.1f} images/s")
    print(f"bare PyTorch loop:  {bare:10.1f} images/s")
    print(f"runner / bare:      {runner / bare:10.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
