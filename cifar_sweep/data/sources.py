"""Dataset sources decoded once into uint8 tensors, cached under `dataset.cache_dir`.

The cache key hashes the source's files (paths, sizes, modification times), so editing, adding or
removing an image rebuilds the cache and nothing else does. The training images' per-channel mean
and std are computed when the cache is built and stored in it (used when dataset.mean/std are null).
"""

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cifar_sweep.checks import unwritable
from cifar_sweep.data import tree
from cifar_sweep.errors import UserError

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # part of the key: a cache written by older code is never read
OFFLINE_HINT = (
    "offline, use dataset=cifar10_folder dataset.root=<ImageFolder tree>, e.g. the JPEG copy "
    "unpacked from ../shared/data/cifar10-jpeg.tar.xz"
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
    root = Path(cfg.root)
    if cfg.source == "cifar10":
        batches = _download_cifar10(root)
        stamp = tree.stamp(root, [str(p) for p in batches])
        build = lambda: _read_cifar10(root)  # noqa: E731
    elif cfg.source in ("folder", "tiny_imagenet"):
        if cfg.source == "folder":
            listing = tree.image_folder(root, stat=True)
        else:
            _download_tiny_imagenet(root, download=cfg.download)
            listing = tree.tiny_imagenet(root, stat=True)
        if listing.skipped:
            log.info(
                "dataset: skipped %d files that are not images, e.g. %s",
                len(listing.skipped),
                listing.skipped[0],
            )
        stamp = listing.stamp
        build = lambda: _read_tree(listing, cfg.image_size)  # noqa: E731
    else:
        raise UserError(
            f"dataset.source={cfg.source!r} is not one of cifar10, folder, tiny_imagenet, synthetic"
        )
    key = f"{CACHE_VERSION}|{cfg.source}|{cfg.get('image_size')}|{stamp}"
    path = Path(cfg.cache_dir) / f"{cfg.source}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    return _read_cache(path) or _write_cache(path, cfg.cache_dir, build)


def _read_cache(path: Path) -> Splits | None:
    """The cached splits, or None when there is no cache or it cannot be read (it is rebuilt)."""
    if not path.exists():
        return None
    try:
        splits = Splits(**torch.load(path))
    except Exception as e:  # truncated by a full disk, or not ours: decoding again is the fix
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        log.warning("dataset: cache %s is unreadable (%s); rebuilding it", path, reason)
        return None
    log.info("dataset: cached tensors %s", path)
    return splits


def _write_cache(path: Path, cache_dir: str, build) -> Splits:
    """Decode with `build` and save atomically: a crash never leaves half a cache."""
    blocker = unwritable(Path(cache_dir).absolute())
    if blocker is not None:  # refused before decoding, which can take minutes
        raise UserError(
            f"dataset.cache_dir={cache_dir}: cannot write the cache there "
            f"({blocker} is not a writable folder)"
        )
    t0 = time.perf_counter()
    splits = build()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(vars(splits), tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
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


def _download_cifar10(root: Path) -> list[Path]:
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # no network, a proxy page, a truncated archive...
        msg = f"dataset.root={root}: could not download CIFAR-10 ({e}); {OFFLINE_HINT}"
        raise UserError(msg) from None
    return sorted((root / "cifar-10-batches-py").glob("*_batch*"))


def _read_cifar10(root: Path) -> Splits:
    from torchvision.datasets import CIFAR10

    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = CIFAR10(str(root), train=train, download=False)
        out[f"{split}_x"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.tensor(ds.targets, dtype=torch.int64)
    return Splits(**out, classes=list(ds.classes), **channel_stats(out["train_x"]))


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


def _read_tree(listing: tree.Tree, image_size: int | None) -> Splits:
    """Decode every image: 1 channel if the first training image is grayscale, else RGB (an alpha
    channel is dropped, as torchvision's ImageFolder does); resized to image_size if given."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize, to_dtype

    def decode(path: str, mode: ImageReadMode) -> Tensor:
        try:
            img = decode_image(path, mode=mode)
        except (RuntimeError, ValueError):
            raise UserError(
                f"dataset.root={listing.root}: corrupt or unsupported image {path}"
            ) from None
        return to_dtype(img, torch.uint8, scale=True)  # 16-bit PNGs

    first_path = listing.files["train"][0][0]
    first = decode(first_path, ImageReadMode.UNCHANGED)
    mode = ImageReadMode.GRAY if first.shape[0] in (1, 2) else ImageReadMode.RGB

    def read(path: str) -> Tensor:
        img = decode(path, mode)
        return resize(img, [image_size, image_size], antialias=True) if image_size else img

    out = {}
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        for split in ("train", "test"):
            paths = [p for p, _ in listing.files[split]]
            images = list(pool.map(read, paths))
            if not image_size:
                _same_size(images, paths, first_path, tuple(first.shape[1:]))
            out[f"{split}_x"] = torch.stack(images)
            out[f"{split}_y"] = torch.tensor(
                [y for _, y in listing.files[split]], dtype=torch.int64
            )
    return Splits(**out, classes=listing.classes, **channel_stats(out["train_x"]))


def _same_size(images: list[Tensor], paths: list[str], first: str, size: tuple) -> None:
    for img, path in zip(images, paths, strict=True):
        if tuple(img.shape[1:]) != size:
            h, w = img.shape[1:]
            raise UserError(
                f"{path} is {w}x{h} but {first} is {size[1]}x{size[0]}: set "
                f"dataset.image_size=<pixels> (e.g. dataset.image_size={max(size)}) to resize "
                "every image to that square size"
            )


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
