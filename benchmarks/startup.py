"""How fast a command starts: a cached dataset load, a bad value's error, the first training step.

    python -m benchmarks.startup          # or: make bench-startup (unpacks the JPEG copy first)

1. Cached load of CIFAR-10 (JPEG q75 copy, 60,000 files in data/cifar10-jpeg): `sources.load`
   with its currency check (a stat of every file), split into that check and `torch.load`.
2. A bad value (`optimizer.lr=0`, and `hydra.sweeper.n_trials=0` with -m): seconds from the
   command's start to its one-line error, and which heavy modules it imported on the way.
3. A plain run on the cached JPEG copy (default ResNet-18): seconds until training starts (the
   epoch's progress bar appears) and until the first step is done.
4. The dry build (cifar_sweep/dry_build.py) of the default run (ResNet-18 at width 64, 3x32x32):
   the first in this process and the median of the next; and what a sweep's trial adds, on the
   tests' tiny models (ResNet-18 at width 8 and the NAS CNN, 3x16x16), with and without the
   model's forward and backward (trials skip it).
Each figure is the median of a few runs; the machine's load shows in the spread.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JPEG = ROOT / "data" / "cifar10-jpeg"
HEAVY = ("torch", "lightning", "torchvision", "optuna", "sqlalchemy", "matplotlib")


def cached_load(repeats: int = 5) -> None:
    from hydra import compose, initialize_config_dir

    from cifar_sweep.config_dir import CONF
    from cifar_sweep.data import sources, tree

    with initialize_config_dir(str(CONF)):
        cfg = compose("config", overrides=["dataset=cifar10_folder", f"dataset.root={JPEG}"])
    data = sources.load(cfg.dataset)  # builds the cache the first time (about a minute)
    n = len(data.train_x) + len(data.test_x)
    total, check = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sources.load(cfg.dataset)
        total.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        tree.image_folder(JPEG, stat=True)
        check.append(time.perf_counter() - t0)
    t, c = statistics.median(total), statistics.median(check)
    print(
        f"cached load, CIFAR-10 (JPEG q75 copy), {n} images: {t:.2f} s "
        f"(currency check {c:.2f} s, the rest torch.load {t - c:.2f} s; "
        f"min {min(total):.2f}, max {max(total):.2f})"
    )


def bad_value(args: list[str], repeats: int = 3) -> None:
    cmd = [sys.executable, "-m", "cifar_sweep", *args]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd[1:]], cwd=ROOT, capture_output=True, text=True
    )
    imported = {m.group(1) for m in re.finditer(r"\|\s+(\w+)$", traced.stderr, re.M)}
    heavy = [m for m in HEAVY if m in imported] or ["none"]
    print(
        f"bad value {' '.join(args)}: {statistics.median(times):.2f} s to "
        f"{result.stderr.strip()!r} (exit {result.returncode}); heavy imports: "
        f"{', '.join(heavy)}"
    )


def first_step(repeats: int = 3) -> None:
    """Seconds until the epoch's progress bar (on stdout) appears, and until it shows the first
    batch done; the run is stopped there."""
    starts, steps = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            cmd = [
                sys.executable,
                "-m",
                "cifar_sweep",
                "dataset=cifar10_folder",
                f"dataset.root={JPEG}",
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=3",
                f"hydra.run.dir={out}",
            ]
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            seen, start = "", None
            while proc.poll() is None:
                seen += os.read(proc.stdout.fileno(), 4096).decode(errors="replace")
                if start is None and "Epoch 0:" in seen:
                    start = time.perf_counter() - t0
                if re.search(r"Epoch 0:.*?\b1/\d", seen):
                    steps.append(time.perf_counter() - t0)
                    starts.append(start)
                    break
            proc.kill()
            proc.wait()
    if not steps:
        print(f"first training step: not seen; output ends {seen[-500:]!r}")
        return
    print(
        f"plain run (ResNet-18, cached JPEG copy): training starts at "
        f"{statistics.median(starts):.2f} s, first step done at {statistics.median(steps):.2f} s"
    )


def dry_build_time(repeats: int = 7) -> None:
    from hydra import compose, initialize_config_dir

    from cifar_sweep import dry_build
    from cifar_sweep.config_dir import CONF

    def seconds(cfg, *, forward: bool) -> list[float]:
        times = []
        for _ in range(repeats):
            dry_build._built = None  # built again, not remembered
            t0 = time.perf_counter()
            dry_build.dry_build(cfg, forward=forward)
            times.append(time.perf_counter() - t0)
        return times

    tiny = ["dataset=synthetic", "trainer.accelerator=cpu", "trainer.max_epochs=1"]
    with initialize_config_dir(str(CONF)):
        default = compose("config", overrides=["dataset=cifar10"])
        trials = {
            "ResNet-18 width 8": compose("config", overrides=[*tiny, "model.width=8"]),
            "NAS CNN": compose("config", overrides=[*tiny, "model=nas_cnn", "optimizer=adam"]),
        }
    times = seconds(default, forward=True)
    print(
        f"dry build, ResNet-18 (width 64, 3x32x32): first {times[0]:.2f} s, then "
        f"{statistics.median(times[1:]):.2f} s (min {min(times):.2f}, max {max(times):.2f})"
    )
    for name, cfg in trials.items():
        bare = statistics.median(seconds(cfg, forward=False)[1:])
        full = statistics.median(seconds(cfg, forward=True)[1:])
        print(
            f"a sweep trial's dry build, {name} (3x16x16): {bare * 1000:.0f} ms without the "
            f"model's forward and backward (what a trial runs), {full * 1000:.0f} ms with it"
        )


def main() -> None:
    print(
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}, Python "
        f"{sys.version.split()[0]}"
    )
    bad_value(["optimizer.lr=0"])
    bad_value(["-m", "hydra.sweeper.n_trials=0"])
    dry_build_time()
    if not JPEG.is_dir():
        print(f"{JPEG} is missing: make data/cifar10-jpeg unpacks it (the load figures need it)")
        return
    cached_load()
    first_step()


if __name__ == "__main__":
    main()
