"""Dataset sources decoded once into uint8 tensors, cached under `dataset.cache_dir`.

The cache key hashes the source's files (paths, sizes, modification times), so editing, adding or
removing an image rebuilds the cache and nothing else does. The training images' per-channel mean
and std are computed when the cache is built and stored in it (used when dataset.mean/std are null).
The cache is memory-mapped when read; a cold one is built by one process at a time (a file lock),
so workers started together decode once and the others read what it wrote.
"""

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cifar_sweep import full_disk
from cifar_sweep.data import decode, tree
from cifar_sweep.errors import UserError
from cifar_sweep.folders import unwritable

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # part of the key: a cache written by older code is never read
OFFLINE_HINT = (  # the three ways to CIFAR-10, as `make quickstart` tries them
    "offline, use an ImageFolder copy: dataset=cifar10_folder dataset.root=<tree> (by default "
    "data/cifar10-jpeg; make data/cifar10-jpeg CIFAR10_JPEG=<cifar10-jpeg.tar.xz> unpacks the "
    "JPEG copy there), or connect to the network for the official download"
)
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@dataclass
class Splits:
    """Images as uint8 (N, C, H, W) and labels as int64, for the training and test splits; the
    training images' per-channel mean and std in [0, 1] units."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    mean: list[float]
    std: list[float]


def load(cfg) -> Splits:
    """The splits of the source named by `dataset.source`, from the cache when it is current."""
    if cfg.source == "synthetic":
        return synthetic(cfg)
    if cfg.source not in ("cifar10", "folder", "tiny_imagenet"):
        raise UserError(
            f"dataset.source={cfg.source!r} is not one of cifar10, folder, tiny_imagenet, synthetic"
        )
    stamp, build = _source(cfg, fetch=False)
    if stamp is not None and (splits := _read_cache(_cache_path(cfg, stamp))):
        return splits
    with _building(cfg):  # another process may have built it meanwhile: looked up again
        stamp, build = _source(cfg, fetch=True)
        path = _cache_path(cfg, stamp)
        return _read_cache(path) or _write_cache(path, cfg.cache_dir, build)


def _source(cfg, *, fetch: bool) -> tuple[str | None, Callable[[], Splits]]:
    """The stamp of the source's files and how to decode them. Without `fetch`, nothing is
    downloaded or verified (the stamp is None when the files are missing): a current cache is
    then read without CIFAR-10's md5 check and unpickling of 180 MB, seconds each run."""
    root = Path(cfg.root)
    if cfg.source == "cifar10":
        if fetch:
            _download_cifar10(root)
        batches = _cifar10_batches(root)
        stamp = tree.stamp(root, batches) if batches else None
        return stamp, lambda: _read_cifar10(root)
    if cfg.source == "tiny_imagenet":
        if not fetch and not (root / "wnids.txt").exists():
            return None, lambda: None
        _download_tiny_imagenet(root, download=cfg.download)
        listing = tree.tiny_imagenet(root, stat=True)
    else:
        listing = tree.image_folder(root, stat=True)
    if listing.skipped and not fetch:
        log.info(
            "dataset: skipped %d files that are not images, e.g. %s",
            len(listing.skipped),
            listing.skipped[0],
        )
    return listing.stamp, lambda: _tree_splits(listing, cfg.image_size)


def _cache_path(cfg, stamp: str) -> Path:
    key = f"{CACHE_VERSION}|{cfg.source}|{cfg.get('image_size')}|{stamp}"
    return Path(cfg.cache_dir) / f"{cfg.source}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


@contextmanager
def _building(cfg):
    """Held while a cache of `dataset.source` is checked, downloaded and built: one process at a
    time. flock is released by the kernel when its holder dies, so a killed build blocks no one."""
    cache_dir = Path(cfg.cache_dir)
    blocker = unwritable(cache_dir.absolute())
    if blocker is not None:  # refused before decoding, which can take minutes
        raise UserError(
            f"dataset.cache_dir={cfg.cache_dir}: cannot write the cache there "
            f"({blocker} is not a writable folder)"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{cfg.source}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_cache(path: Path) -> Splits | None:
    """The cached splits, memory-mapped (pages are read as batches use them, and shared by the
    processes of one machine), or None when there is no cache or it cannot be read."""
    if not path.exists():
        return None
    try:
        splits = Splits(**torch.load(path, mmap=True))
    except Exception as e:  # truncated by a full disk, or not ours: decoding again is the fix
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        log.warning("dataset: cache %s is unreadable (%s); rebuilding it", path, reason)
        return None
    log.info("dataset: cached tensors %s", path)
    return splits


def _write_cache(path: Path, cache_dir: str, build) -> Splits:
    """Decode with `build` and save atomically: a crash never leaves half a cache."""
    t0 = time.perf_counter()
    splits = build()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:  # a Python file: a full disk's OSError reaches us (as the
            torch.save(vars(splits), f)  # cause of torch's RuntimeError, or as itself)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        full = full_disk.cause(e)
        if full is not None:
            elsewhere = "dataset.cache_dir=<a folder on another disk>"
            raise full_disk.error(full, Path(cache_dir), elsewhere) from None
        if not isinstance(e, OSError):
            raise
        raise UserError(f"dataset.cache_dir={cache_dir}: cannot write the cache ({e})") from None
    log.info(
        "dataset: decoded %d training and %d test images into %s in %.1f s; training images' "
        "mean %s, std %s",
        len(splits.train_x),
        len(splits.test_x),
        path,
        time.perf_counter() - t0,
        [round(m, 4) for m in splits.mean],
        [round(s, 4) for s in splits.std],
    )
    return splits


def channel_stats(x: Tensor) -> dict[str, list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) in [0, 1] units, exact (from a
    histogram of the 256 values), without a float copy of the images: Splits' mean and std."""
    values = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        m = (counts * values).sum() / counts.sum()
        s = ((counts * (values - m) ** 2).sum() / counts.sum()).sqrt()
        mean.append(m.item())
        std.append(s.item() or 1.0)  # a constant channel: normalized to zero either way
    return {"mean": mean, "std": std}


def _cifar10_batches(root: Path) -> list[str] | None:
    """The six batch files of torchvision's layout, or None when one is missing."""
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    paths = [folder / n for n in names]
    return [str(p) for p in paths] if all(p.is_file() for p in paths) else None


def fetch(cfg) -> None:
    """The source's files downloaded now where they are missing (cifar10, tiny_imagenet): a
    sweep fetches them once before its study starts, so a dataset that cannot be had is one
    line before any trial."""
    if cfg.source not in ("cifar10", "tiny_imagenet"):
        return  # a tree on disk, listed by the checks already; generated data
    root = Path(cfg.root)
    missing = (cfg.source == "cifar10" and not _cifar10_batches(root)) or (
        cfg.source == "tiny_imagenet" and not (root / "wnids.txt").exists()
    )
    if missing:
        with _building(cfg):
            _source(cfg, fetch=True)


def _download_cifar10(root: Path) -> None:
    """Downloads the archive unless its files are there and pass their md5 check."""
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # no network, a proxy page, a truncated archive...
        msg = f"dataset.root={root}: could not download CIFAR-10 ({e}); {OFFLINE_HINT}"
        raise UserError(msg) from None


def _read_cifar10(root: Path) -> Splits:
    from torchvision.datasets import CIFAR10

    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = CIFAR10(str(root), train=train, download=False)
        out[f"{split}_x"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.tensor(ds.targets, dtype=torch.int64)
    return Splits(**out, classes=list(ds.classes), **channel_stats(out["train_x"]))


def _tree_splits(listing: tree.Tree, image_size: int | None) -> Splits:
    out = decode.read_tree(listing, image_size)
    return Splits(**out, classes=listing.classes, **channel_stats(out["train_x"]))


def _download_tiny_imagenet(root: Path, *, download: bool) -> None:
    if (root / "wnids.txt").exists() or not download:
        return
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(TINY_IMAGENET_URL, str(root.parent), remove_finished=True)
    except Exception as e:
        raise UserError(
            f"dataset.root={root}: could not download Tiny ImageNet ({e}); offline, unzip "
            "tiny-imagenet-200.zip and set dataset.root=<its folder> dataset.download=false"
        ) from None


def synthetic(cfg) -> Splits:
    """A learnable set: each class is a smooth colour template; images add Gaussian noise."""
    g = torch.Generator().manual_seed(cfg.split_seed)
    k, c, s = cfg.num_classes, cfg.channels, cfg.image_size
    coarse = torch.rand(k, c, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(s, s), mode="bilinear")

    def make(per_class: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(k).repeat_interleave(per_class)
        x = templates[y] + cfg.noise * torch.randn(len(y), c, s, s, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = make(cfg.train_per_class)
    test_x, test_y = make(cfg.test_per_class)
    classes = [f"class{i}" for i in range(k)]
    return Splits(train_x, train_y, test_x, test_y, classes, **channel_stats(train_x))
