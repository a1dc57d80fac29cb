"""Training speed of the runner (Lightning) against a bare PyTorch loop, side by side.

Both train the same model with the same optimizer, precision, memory format and compile setting
on the same device-resident batches with the same augmentation; their ratio is the runner's
overhead. Reports seconds per training epoch, images/s and MFU: training FLOPs per image (3 x
forward, torch's flop counter) x images/s over a bf16 matrix-product rate measured in the same
process. `profile()` says where a step's time goes (torch.profiler). Any config override works:

    python -m benchmarks.throughput                                   # CPU-sized defaults
    python -m benchmarks.throughput dataset=cifar10_folder trainer.compile=true
"""

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cifar_sweep import flops
from cifar_sweep.config_dir import CONF
from cifar_sweep.data import sources
from cifar_sweep.data.augment import build_augment
from cifar_sweep.data.batches import DeviceBatches
from cifar_sweep.instantiate import build
from cifar_sweep.train import device_defaults, quiet_lightning, train

CPU_DEFAULTS = [
    "dataset=synthetic",
    "dataset.image_size=32",
    "dataset.train_per_class=400",
    "dataset.val_size=200",
    "dataset.num_classes=10",
    "model.width=16",
    "trainer.max_epochs=3",
    "trainer.progress_bar=false",
]


def config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONF)):
        return device_defaults(compose("config", overrides=overrides))


def train_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def matmul_tflops(dev: torch.device, n: int = 8192, repeats: int = 20) -> float:
    """A large bf16 matrix product's rate on `dev` (float32 on the CPU, and smaller)."""
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    n = n if dev.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))  # never zeros
    for _ in range(3):
        a @ b
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(dev)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def train_batches(cfg: DictConfig, dev: torch.device) -> DeviceBatches:
    """The training split as the runner's datamodule gives it (same split, same augmentation)."""
    data = sources.load(cfg.dataset)
    order = torch.randperm(
        len(data.train_x), generator=torch.Generator().manual_seed(cfg.dataset.split_seed)
    )[cfg.dataset.val_size :]
    return DeviceBatches(
        data.train_x[order].to(dev),
        data.train_y[order].to(dev),
        batch_size=cfg.dataset.batch_size,
        mean=torch.tensor(list(cfg.dataset.mean), device=dev),
        std=torch.tensor(list(cfg.dataset.std), device=dev),
        augment=build_augment(cfg.dataset.augment),
        shuffle=True,
        seed=cfg.seed,
        channels_last=cfg.trainer.channels_last,
    )


def bare_loop(cfg: DictConfig, dev: torch.device) -> float:
    """Seconds of the last of `trainer.max_epochs` epochs of a plain PyTorch training loop."""
    batches = train_batches(cfg, dev)
    model = build(cfg.model, num_classes=int(batches.y.max()) + 1, in_channels=batches.x.shape[1])
    flops.count(model, tuple(batches.x.shape[1:]))  # as the runner does: lazy layers take shape
    model = model.to(dev)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if cfg.trainer.compile else model
    optimizer = build(cfg.optimizer)(params=model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.trainer.label_smoothing)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(
        str(cfg.trainer.precision)
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    for _ in range(cfg.trainer.max_epochs):
        sync(dev)
        t0 = time.perf_counter()
        for xb, yb in batches:
            ctx = torch.autocast(dev.type, dtype) if dtype else contextlib.nullcontext()
            with ctx:
                loss = loss_fn(step_model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        sync(dev)
        elapsed = time.perf_counter() - t0
    return elapsed


def measure(overrides: list[str], rate_tflops: float | None = None) -> dict:
    """Runner and bare loop for one configuration: s/epoch, images/s, ratio, MFU."""
    cfg = config(overrides)
    dev = train_device()
    torch._dynamo.reset()  # each configuration compiles afresh, within dynamo's recompile limit
    with tempfile.TemporaryDirectory() as out:
        metrics = train(cfg, Path(out))
    runner_s = metrics["time/epoch_s"]  # the last epoch's training time
    images = metrics["time/images_per_s"] * runner_s
    torch._dynamo.reset()
    bare_s = bare_loop(cfg, dev)
    rate = rate_tflops or matmul_tflops(dev)
    train_flops = 3 * metrics["model/flops"]  # forward + backward ~ 3 forwards
    return {
        "batch": cfg.dataset.batch_size,
        "compile": bool(cfg.trainer.compile),
        "precision": str(cfg.trainer.precision),
        "channels_last": bool(cfg.trainer.channels_last),
        "images": int(images),
        "runner_s_per_epoch": runner_s,
        "bare_s_per_epoch": bare_s,
        "runner_over_bare": runner_s / bare_s,
        "runner_images_per_s": images / runner_s,
        "bare_images_per_s": images / bare_s,
        "mfu": train_flops * images / runner_s / (rate * 1e12),
        "matmul_tflops": rate,
    }


def profile(overrides: list[str], steps: int = 20) -> str:
    """torch.profiler over `steps` bare-loop steps after a warm-up: the top kernels by device
    time (by CPU time on a CPU) and the CPU time per step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    cfg = config([*overrides, "trainer.max_epochs=1"])
    dev = train_device()
    bare_loop(cfg, dev)  # warm-up (and compile)
    batches = train_batches(cfg, dev)
    model = build(cfg.model, num_classes=int(batches.y.max()) + 1, in_channels=batches.x.shape[1])
    flops.count(model, tuple(batches.x.shape[1:]))
    model = model.to(dev).to(
        memory_format=torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    )
    optimizer = build(cfg.optimizer)(params=model.parameters())
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    dtype = torch.bfloat16 if str(cfg.trainer.precision) == "bf16-mixed" else None
    with profiler(activities=activities) as prof:
        for i, (xb, yb) in enumerate(batches):
            if i == steps:
                break
            ctx = torch.autocast(dev.type, dtype) if dtype else contextlib.nullcontext()
            with ctx:
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(dev)
    sort = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=50)
    cpu_ms = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3 / steps
    return f"CPU time per step: {cpu_ms:.2f} ms (over {steps} steps)\n{table}"


def main(overrides: list[str]) -> None:
    quiet_lightning()
    overrides = [*CPU_DEFAULTS, *overrides]
    cfg = config(overrides)
    sources.load(cfg.dataset)  # build the cache once, outside the timings
    t0 = time.perf_counter()
    sources.load(cfg.dataset)
    load_s = time.perf_counter() - t0
    r = measure(overrides)
    dev = train_device()
    print(
        f"device: {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"overrides: {' '.join(overrides)}")
    kind = "generated in memory" if cfg.dataset.source == "synthetic" else "from the cache file"
    print(f"dataset load ({kind}): {load_s:.3f} s")
    print(
        f"batch {r['batch']}, {r['precision']}, channels_last={r['channels_last']}, "
        f"compile={r['compile']}, {r['images']} training images per epoch"
    )
    print(
        f"runner (Lightning): {r['runner_s_per_epoch']:8.3f} s/epoch "
        f"{r['runner_images_per_s']:10.1f} images/s"
    )
    print(
        f"bare PyTorch loop:  {r['bare_s_per_epoch']:8.3f} s/epoch "
        f"{r['bare_images_per_s']:10.1f} images/s"
    )
    print(f"runner / bare:      {r['runner_over_bare']:8.3f} (seconds per epoch)")
    print(f"MFU: {r['mfu']:.3f} of a measured {r['matmul_tflops']:.1f} TFLOP/s matrix product")


if __name__ == "__main__":
    main(sys.argv[1:])
